"""Code systems by the other names EHRs give them -> the canonical FHIR URI the value sets use.

Value sets keep the canonical URIs (hl7.org/fhir/R4/terminologies-systems.html); a coding sent
under another spelling of the same system is read as if it had been sent under the canonical
one. Each alias and where it was verified:

- OIDs (``urn:oid:...`` or bare): SNOMED CT 2.16.840.1.113883.6.96, LOINC 2.16.840.1.113883.6.1,
  RxNorm 2.16.840.1.113883.6.88, WHO ICD-10 2.16.840.1.113883.6.3 (FHIR NamingSystem
  "terminologies", hl7.org/fhir/stu3/namingsystem-terminologies.html, verified 2026-12-01);
  ICD-10-CM 2.16.840.1.113883.6.90 (same registry; also the OID of the CMS ICD-10-CM code system
  named in the VSAC expansions of cqframework/ecqm-content-qicore-2024@9ebd48ffe); ATC
  2.16.840.1.113883.6.73 (eHealth Suisse ehealth_connector ``WHOATCCode`` enum and the
  ANS "fr-traitement-maladie-rare" logical model, both "OIDs: 2.16.840.1.113883.6.73").
- French CIM-10 (ATIH's French modification of WHO ICD-10, read as WHO ICD-10; its extension
  codes are subdivisions of a WHO code, see ``FRENCH_ICD10``):
  ``https://smt.esante.gouv.fr/terminologie-cim-10`` (ANS Serveur Multi-Terminologies; used as
  Condition.code system in the FR Core Condition example and the ANS TDDUI examples),
  ``http://data.esante.gouv.fr/atih/cim10`` (the ANS/ATIH CIM-10 RDF base URI), and
  ``https://mos.esante.gouv.fr/NOS/TRE_R310-CIM10/FHIR/TRE-R310-CIM10`` (ANS NOS table
  TRE_R310-CIM10, ansforge/IG-fhir-mesures-de-sante input/fsh/CodeSystems/TRE_R310-CIM10.fsh,
  whose identifier is urn:oid:2.16.840.1.113883.6.3).
- Spelling variants of any canonical URI: http vs https, a trailing slash, letter case, and
  SNOMED CT edition / version URIs (``http://snomed.info/sct/900000000000207008/version/
  20230131``, SNOMED CT URI standard, "Edition URI" and "Version URI").
- A code carrying its term, SNOMED CT compositional-grammar style (``89155008 |Systemic
  sclerosis|``): the term is dropped.
"""

from __future__ import annotations

import re

SNOMED = "http://snomed.info/sct"
LOINC = "http://loinc.org"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
ATC = "http://www.whocc.no/atc"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
ICD10 = "http://hl7.org/fhir/sid/icd-10"

CANONICAL = (SNOMED, LOINC, RXNORM, ATC, ICD10CM, ICD10)

OIDS = {
    "2.16.840.1.113883.6.96": SNOMED,
    "2.16.840.1.113883.6.1": LOINC,
    "2.16.840.1.113883.6.88": RXNORM,
    "2.16.840.1.113883.6.73": ATC,
    "2.16.840.1.113883.6.90": ICD10CM,
    "2.16.840.1.113883.6.3": ICD10,
}

# French CIM-10 system URIs (without scheme, lower case, no trailing slash).
FRENCH_ICD10 = frozenset(
    {
        "smt.esante.gouv.fr/terminologie-cim-10",
        "data.esante.gouv.fr/atih/cim10",
        "mos.esante.gouv.fr/nos/tre_r310-cim10/fhir/tre-r310-cim10",
    }
)


def _key(uri: str) -> str:
    """A URI without its scheme, trailing slashes or '#', lower-cased."""
    u = uri.strip().lower()
    u = re.sub(r"^https?://", "", u)
    return u.rstrip("/#")


_BY_KEY = {_key(uri): uri for uri in CANONICAL}
_BY_KEY.update(dict.fromkeys(FRENCH_ICD10, ICD10))


def canonical_system(system: str) -> str:
    """The canonical FHIR URI of `system`, or `system` itself when it is not an alias."""
    if system in CANONICAL:
        return system
    text = system.strip()
    oid = text[8:] if text.lower().startswith("urn:oid:") else text
    if oid in OIDS:
        return OIDS[oid]
    key = _key(text)
    if key in _BY_KEY:
        return _BY_KEY[key]
    if key.startswith("snomed.info/sct/"):  # an edition or version URI
        return SNOMED
    return system


def is_french_icd10(system: str) -> bool:
    return _key(system) in FRENCH_ICD10


def bare_code(code: str) -> str:
    """A code without a trailing ``|term|`` (SNOMED CT expression style) or spaces."""
    return code.split("|", 1)[0].strip()
