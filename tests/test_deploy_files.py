"""The deployment files of deploy/ (README, "With Docker Compose", "On Kubernetes"), checked
without a container engine or a cluster: the Compose file against the compose-spec schema
(vendored by check-jsonschema), the Kubernetes manifests against the Kubernetes schemas (bundled
by kubernetes-validate, strict: an unknown field is an error), both offline. And what no schema
says: non-root as the image's user, the probes, who migrates, real setting names whose values
the service accepts, the image's port, the nginx configuration (`nginx -t` where nginx is)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml

from cds_service.settings import REPLACED_SETTINGS, Settings, SettingsError
from cds_service.trust import load_issuers
from tests.conftest import ROOT
from tests.dockerfile import ignore_patterns, ignored, stages

DEPLOY = ROOT / "deploy"
COMPOSE_DIR = DEPLOY / "compose"
COMPOSE_FILE = COMPOSE_DIR / "compose.yaml"
KUBERNETES = DEPLOY / "kubernetes"
# The oldest Kubernetes these manifests are written for, and the newest the validator ships.
KUBERNETES_VERSIONS = ("1.30", kubernetes_validate.latest_version())
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["version"]
# Variables the service reads that are not CDS_* (cli.py, gunicorn_conf.py, settings.py).
OTHER_VARIABLES = {"DATABASE_URL", "LOG_LEVEL", "LOG_FORMAT", "PORT", "WEB_CONCURRENCY"}
# check-jsonschema with the compose-spec schema it vendors: nothing is downloaded.
VALIDATE_COMPOSE = (
    sys.executable,
    "-m",
    "check_jsonschema",
    "--builtin-schema",
    "vendor.compose-spec",
)
A_KEY = "k" * 40  # stands for a real CDS_HASH_KEY where a placeholder is
TMP = "/tmp"  # noqa: S108 - the containers' writable folder, not one of this machine's


def _image() -> dict[str, str]:
    """The final stage's USER, EXPOSE and ENV PORT, as the Dockerfile says."""
    final = stages()[-1]
    by_keyword = {i.keyword: i.args for i in final}
    port = re.search(r"\bPORT=(\d+)", by_keyword["ENV"])
    assert port is not None
    return {"user": by_keyword["USER"], "expose": by_keyword["EXPOSE"], "port": port.group(1)}


def _known_variables() -> set[str]:
    """Every CDS_* name the service reads (the settings and the serve command's), and the rest."""
    sources = (ROOT / "cds_service" / "settings.py", ROOT / "cds_service" / "devtools" / "cli.py")
    names = {n for p in sources for n in re.findall(r'"(CDS_[A-Z0-9_]+)"', p.read_text("utf-8"))}
    return (names - set(REPLACED_SETTINGS)) | OTHER_VARIABLES


# ----------------------------------------------------------------------------- Kubernetes


def _manifests() -> dict[str, list[dict[str, Any]]]:
    """file name -> its resources, for every manifest but the kustomization."""
    found = {}
    for path in sorted(KUBERNETES.glob("*.yaml")):
        if path.name != "kustomization.yaml":
            found[path.name] = [r for r in yaml.safe_load_all(path.read_text("utf-8")) if r]
    return found


def _resource(kind: str, name: str | None = None) -> dict[str, Any]:
    matches = [
        r
        for resources in _manifests().values()
        for r in resources
        if r["kind"] == kind and name in (None, r["metadata"]["name"])
    ]
    assert len(matches) == 1, f"{kind} {name or ''}: {len(matches)} found"
    return matches[0]


def _pod_specs() -> dict[str, dict[str, Any]]:
    return {kind: _resource(kind)["spec"]["template"]["spec"] for kind in ("Deployment", "Job")}


def _container(kind: str) -> dict[str, Any]:
    (container,) = _pod_specs()[kind]["containers"]
    return container


def _kustomization() -> dict[str, Any]:
    return yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text("utf-8"))


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_manifest_is_valid_against_the_kubernetes_schemas(version: str) -> None:
    manifests = _manifests()
    assert {"deployment.yaml", "migrate-job.yaml", "service.yaml"} <= set(manifests)
    for name, resources in manifests.items():
        for resource in resources:
            try:
                kubernetes_validate.validate(resource, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                where = ".".join(str(p) for p in exc.path)
                pytest.fail(f"{name}: {resource['kind']} at {where}: {exc.message}")


def test_the_kubernetes_validation_refuses_a_misspelt_field() -> None:
    """The check above is not vacuous: strict validation refuses a field Kubernetes does not
    have, here a misspelt probe (a readiness check that would never run)."""
    deployment = _resource("Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["readinesProbe"] = container.pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[0], strict=True)


def test_the_kustomization_applies_every_manifest_but_the_example_secret() -> None:
    kustomization = _kustomization()
    listed = kustomization["resources"]
    assert sorted(listed) == sorted(set(_manifests()) - {"secret.example.yaml"})
    for resources in _manifests().values():
        for resource in resources:
            if resource["kind"] != "Namespace":
                assert resource["metadata"]["namespace"] == kustomization["namespace"]
    assert _resource("Namespace")["metadata"]["name"] == kustomization["namespace"]


def test_the_pods_run_the_image_as_its_non_root_user_hardened() -> None:
    uid, _, gid = _image()["user"].partition(":")
    for kind, pod in _pod_specs().items():
        assert pod["securityContext"]["runAsNonRoot"] is True, kind
        assert pod["automountServiceAccountToken"] is False, kind
        volumes = {v["name"]: v for v in pod["volumes"]}
        for container in pod["containers"]:
            context = container["securityContext"]
            assert context["runAsNonRoot"] is True, kind
            assert (str(context["runAsUser"]), str(context["runAsGroup"])) == (uid, gid), kind
            assert context["allowPrivilegeEscalation"] is False, kind
            assert context["readOnlyRootFilesystem"] is True, kind
            assert context["capabilities"]["drop"] == ["ALL"], kind
            assert context["seccompProfile"]["type"] == "RuntimeDefault", kind
            # A read-only image: gunicorn's heartbeat files and the metrics go to /tmp.
            (tmp,) = [m for m in container["volumeMounts"] if m["mountPath"] == TMP]
            assert "emptyDir" in volumes[tmp["name"]], kind
            for need in ("requests", "limits"):
                assert container["resources"][need]["memory"], (kind, need)


def test_the_probes_ask_livez_and_readyz_on_the_images_port() -> None:
    image = _image()
    container = _container("Deployment")
    (port,) = container["ports"]
    assert str(port["containerPort"]) == image["port"] == image["expose"]
    for probe, path in (
        ("startupProbe", "/readyz"),  # in traffic once whole (schema migrated)...
        ("livenessProbe", "/livez"),
        ("readinessProbe", "/livez"),  # ...then kept through a database outage
    ):
        assert container[probe]["httpGet"] == {"path": path, "port": port["name"]}, probe
    service = _resource("Service")
    (service_port,) = service["spec"]["ports"]
    assert (service_port["port"], service_port["targetPort"]) == (80, port["name"])
    ingress = _resource("Ingress")
    (path,) = ingress["spec"]["rules"][0]["http"]["paths"]
    assert path["backend"]["service"] == {
        "name": service["metadata"]["name"],
        "port": {"name": service_port["name"]},
    }


def test_the_service_and_the_budget_select_the_servers_and_not_the_migration() -> None:
    servers = _resource("Deployment")["spec"]["template"]["metadata"]["labels"]
    migration = _resource("Job")["spec"]["template"]["metadata"]["labels"]
    for kind in ("Service", "PodDisruptionBudget"):
        spec = _resource(kind)["spec"]
        selector = spec["selector"] if kind == "Service" else spec["selector"]["matchLabels"]
        assert selector.items() <= servers.items(), kind
        assert not selector.items() <= migration.items(), f"{kind} would select the Job's pod"
    assert _resource("Deployment")["spec"]["replicas"] == 2
    assert _resource("PodDisruptionBudget")["spec"]["minAvailable"] == 1


def test_only_the_job_migrates() -> None:
    job = _resource("Job")
    assert _container("Job")["command"] == ["calcinosis-cds", "migrate"]
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    assert job["spec"]["backoffLimit"] > 0
    assert job["spec"]["ttlSecondsAfterFinished"] > 0
    server = _container("Deployment")
    assert "command" not in server, "the image's serve, unchanged"
    assert "args" not in server
    assert _settings(server)["CDS_AUTO_MIGRATE"] == "off"


def test_the_images_are_this_version_and_the_kustomization_names_them() -> None:
    (image,) = _kustomization()["images"]
    for kind in ("Deployment", "Job"):
        assert _container(kind)["image"] == f"{image['name']}:{VERSION}", kind
    assert image["newTag"] == VERSION


def _settings(container: dict[str, Any]) -> dict[str, str]:
    """The environment a container gets: its ConfigMaps and Secrets (the example's
    placeholders), then its own env."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env.update(_resource("ConfigMap", source["configMapRef"]["name"])["data"])
        else:
            env.update(_resource("Secret", source["secretRef"]["name"])["stringData"])
    env.update({e["name"]: e["value"] for e in container.get("env", [])})
    return env


def test_the_kubernetes_settings_are_real_and_refused_until_the_placeholders_are_replaced() -> None:
    known = _known_variables()
    for kind in ("Deployment", "Job"):
        env = _settings(_container(kind))
        assert set(env) <= known, f"{kind}: not settings: {sorted(set(env) - known)}"
        with pytest.raises(SettingsError, match="CDS_HASH_KEY"):
            Settings.from_env(env)  # the example Secret's key is refused in production
        settings = Settings.from_env({**env, "CDS_HASH_KEY": A_KEY})
        assert (settings.production, settings.auth) == (True, "jwt")
        assert settings.database_url.startswith("postgresql+psycopg://")
        assert settings.auto_migrate is (kind != "Deployment")


def test_the_trusted_issuers_are_mounted_where_the_setting_points(tmp_path: Path) -> None:
    for kind, pod in _pod_specs().items():
        env = _settings(pod["containers"][0])
        issuers = Path(env["CDS_TRUSTED_ISSUERS"])
        (mount,) = [m for m in pod["containers"][0]["volumeMounts"] if m["mountPath"] != TMP]
        assert (mount["mountPath"], mount["readOnly"]) == (str(issuers.parent), True), kind
        (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
        data = _resource("ConfigMap", volume["configMap"]["name"])["data"]
        (tmp_path / issuers.name).write_text(data[issuers.name], encoding="utf-8")
        assert load_issuers(tmp_path / issuers.name), kind


def test_the_ingress_buffers_and_limits_requests_as_the_service_does() -> None:
    ingress = _resource("Ingress")
    # A JWT's aud is CDS_PUBLIC_BASE_URL + the path: the URL clients reach through the Ingress.
    public = urlsplit(_settings(_container("Deployment"))["CDS_PUBLIC_BASE_URL"])
    (rule,) = ingress["spec"]["rules"]
    (tls,) = ingress["spec"]["tls"]
    assert (public.scheme, public.hostname) == ("https", rule["host"])
    assert tls["hosts"] == [rule["host"]]
    annotations = ingress["metadata"]["annotations"]
    prefix = "nginx.ingress.kubernetes.io/"
    assert annotations[prefix + "proxy-request-buffering"] == "on"
    assert _nginx_size(annotations[prefix + "proxy-body-size"]) == Settings().max_body_bytes


# ----------------------------------------------------------------------------- Compose


def _compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text("utf-8"))


def _interpolate(value: str, variables: dict[str, str]) -> str:
    """Compose's ${VAR}, ${VAR:-default} and ${VAR:?error} (only these are used)."""

    def one(match: re.Match[str]) -> str:
        name, operator, word = match.group(1), match.group(2), match.group(3)
        if variables.get(name):
            return variables[name]
        if operator == ":?":
            raise LookupError(f"{name}: {word}")
        return word or ""

    return re.sub(r"\$\{([A-Z0-9_]+)(?:(:-|:\?)([^}]*))?\}", one, value)


def _env_example(*, development: bool = False) -> dict[str, str]:
    """deploy/compose/.env.example as filled in: the two secrets given; with `development`,
    its development lines uncommented and the URL plain http as it says."""
    variables = {}
    for line in (COMPOSE_DIR / ".env.example").read_text("utf-8").splitlines():
        if development and re.fullmatch(r"#CDS_[A-Z_]+=.*", line):
            line = line[1:]
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            variables[name] = value
    variables.update(POSTGRES_PASSWORD="0123456789abcdef", CDS_HASH_KEY=A_KEY)
    if development:
        variables["CDS_PUBLIC_BASE_URL"] = "http://localhost:8080"
    return variables


def _service_env(service: str, variables: dict[str, str]) -> dict[str, str]:
    environment = _compose()["services"][service]["environment"]
    return {name: _interpolate(str(value), variables) for name, value in environment.items()}


def test_the_compose_file_is_valid_against_the_compose_spec_schema(tmp_path: Path) -> None:
    def check(path: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(  # noqa: S603 - the validator of the test extra, fixed arguments
            [*VALIDATE_COMPOSE, str(path)],
            capture_output=True,
            text=True,
            check=False,
        )

    result = check(COMPOSE_FILE)
    assert result.returncode == 0, result.stdout + result.stderr
    # Not vacuous: a misspelt key of a service is refused.
    misspelt = tmp_path / "compose.yaml"
    misspelt.write_text(
        COMPOSE_FILE.read_text("utf-8").replace("    deploy:\n", "    deploi:\n", 1), "utf-8"
    )
    assert check(misspelt).returncode == 1


def test_compose_migrates_once_then_starts_two_replicas_behind_the_proxy() -> None:
    services = _compose()["services"]
    assert set(services) == {"db", "migrate", "cds", "proxy"}
    db, migrate, cds, proxy = (services[s] for s in ("db", "migrate", "cds", "proxy"))
    assert db["image"].startswith("postgres:16")
    assert "pg_isready" in db["healthcheck"]["test"]
    assert db["volumes"][0].split(":")[0] in _compose()["volumes"]
    assert migrate["command"] == ["calcinosis-cds", "migrate"]
    assert migrate["restart"] == "no"
    assert migrate["depends_on"] == {"db": {"condition": "service_healthy"}}
    assert cds["depends_on"] == {"migrate": {"condition": "service_completed_successfully"}}
    assert "command" not in cds, "the image's serve, unchanged"
    assert cds["environment"]["CDS_AUTO_MIGRATE"] == "off"
    assert cds["deploy"]["replicas"] == 2
    assert "ports" not in cds, "only the proxy is published"
    assert migrate["image"] == cds["image"]
    assert _interpolate(cds["image"], {}) == f"calcinosis-cds:{VERSION}"
    assert proxy["ports"] == [f"127.0.0.1:{_image()['port']}:8080"]
    assert proxy["volumes"][0]["source"] == "./nginx.conf"


def test_compose_runs_the_image_as_its_non_root_user_read_only() -> None:
    for name in ("migrate", "cds"):
        service = _compose()["services"][name]
        assert service["user"] == _image()["user"], name
        assert service["read_only"] is True, name
        assert service["tmpfs"] == [TMP], name
        assert service["cap_drop"] == ["ALL"], name
        (issuers,) = service["volumes"]
        assert issuers["read_only"] is True
        assert load_issuers(COMPOSE_DIR / issuers["source"])
        assert issuers["target"] == service["environment"]["CDS_TRUSTED_ISSUERS"]


def test_the_compose_settings_are_real_and_accepted_in_production_and_development() -> None:
    known = _known_variables()
    for service in ("migrate", "cds"):
        names = set(_compose()["services"][service]["environment"])
        assert names <= known, f"{service}: not settings: {sorted(names - known)}"
        production = Settings.from_env(_service_env(service, _env_example()))
        assert (production.production, production.auth) == (True, "jwt")
        assert production.auto_migrate is (service == "migrate")
        development = Settings.from_env(_service_env(service, _env_example(development=True)))
        assert (development.production, development.auth) == (False, "off")
    for secret in ("POSTGRES_PASSWORD", "CDS_HASH_KEY"):
        with pytest.raises(LookupError, match=secret):  # compose stops, naming it
            _service_env("cds", {**_env_example(), secret: ""})
    # Every variable of the example is one compose.yaml reads.
    text = COMPOSE_FILE.read_text("utf-8")
    example = (COMPOSE_DIR / ".env.example").read_text("utf-8")
    for name in re.findall(r"^#?([A-Z][A-Z0-9_]*)=", example, flags=re.MULTILINE):
        assert "${" + name in text, f".env.example sets {name}, which compose.yaml never reads"


def test_the_secrets_file_is_neither_committed_nor_sent_to_the_image_builder() -> None:
    assert ignored("deploy/compose/.env", ignore_patterns())  # compose builds from the root
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: .gitignore not checked")
    result = subprocess.run(
        ["git", "check-ignore", "--quiet", "deploy/compose/.env"],  # noqa: S607
        cwd=ROOT,
        check=False,
    )
    assert result.returncode == 0, "git would commit deploy/compose/.env"


# ----------------------------------------------------------------------------- nginx


def _nginx_size(value: str) -> int:
    units = {"k": 1024, "m": 1024 * 1024}
    return int(value[:-1]) * units[value[-1].lower()] if value[-1].isalpha() else int(value)


def _directives(path: Path) -> dict[str, list[str]]:
    """Simple directives (name -> the values of each occurrence), comments left out."""
    text = re.sub(r"#[^\n]*", "", path.read_text("utf-8"))
    found: dict[str, list[str]] = {}
    for statement in re.findall(r"([a-z_]+)\s+([^;{}]*);", text):
        found.setdefault(statement[0], []).append(" ".join(statement[1].split()))
    return found


def test_the_proxy_buffers_whole_requests_with_the_services_limits() -> None:
    nginx = _directives(COMPOSE_DIR / "nginx.conf")
    assert nginx["proxy_request_buffering"] == ["on"]
    assert nginx["client_header_timeout"] == ["10s"]
    assert nginx["client_body_timeout"] == ["10s"]
    (body,) = nginx["client_max_body_size"]
    assert _nginx_size(body) == Settings().max_body_bytes
    # To the replicas by the compose service's name, on the image's port.
    assert nginx["set"] == [f"$cds_upstream http://cds:{_image()['port']}"]
    assert "cds" in _compose()["services"]
    assert nginx["listen"] == ["8080"]


def test_nginx_accepts_the_proxy_configuration(tmp_path: Path) -> None:
    nginx = shutil.which("nginx")
    if nginx is None:
        pytest.skip("nginx is not installed here: `nginx -t` not run (apt-get install nginx)")
    # The binary's temporary folders are its distribution's (created by `nginx -t`): moved
    # into tmp_path, as is the pid file; the configuration is otherwise the one shipped.
    temp_paths = "".join(
        f"    {module}_temp_path {tmp_path / module};\n"
        for module in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    config = tmp_path / "nginx.conf"
    pid = ("-g", f"pid {tmp_path / 'nginx.pid'};")
    shipped = (COMPOSE_DIR / "nginx.conf").read_text("utf-8")
    config.write_text(shipped.replace("http {\n", "http {\n" + temp_paths, 1), "utf-8")
    result = subprocess.run(  # noqa: S603 - the system's nginx, fixed arguments
        [nginx, "-t", "-q", "-p", str(tmp_path), "-c", str(config), "-e", "stderr", *pid],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
