// Card preview page of the Calcinosis CDS service (a developer tool, no build step).
//
// It talks to this service only (same origin; the page's Content-Security-Policy enforces
// it): discovery, the fixture patients, the request builder, the services and feedback.
// Everything the service or the pasted JSON supplies is put in the page as text
// (createElement / textContent), never parsed as HTML; card Markdown goes through the small
// renderer below, and only http(s) URLs become links.

const AUTH_HELP =
  "The service answered 401 Unauthorized: it runs with JWT authentication (CDS_AUTH=jwt). " +
  "This preview page cannot sign CDS Hooks JWTs: run the service with CDS_AUTH=off " +
  "(e.g. `make run`) to use it.";

const INDICATOR_LABELS = { critical: "Critical", warning: "Warning", info: "Info" };

// ----------------------------------------------------------------------------- DOM helpers

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

function clear(node) {
  node.replaceChildren();
}

function prettyJson(value) {
  return JSON.stringify(value, null, 2);
}

/** The URL itself when it parses as an absolute http(s) URL, else null. */
export function safeHttpUrl(value) {
  if (typeof value !== "string") return null;
  let url;
  try {
    url = new URL(value);
  } catch {
    return null;
  }
  return url.protocol === "http:" || url.protocol === "https:" ? value : null;
}

/** A link that opens in a new tab, or the label as plain text when the URL is not http(s). */
function externalLink(url, label, className) {
  const href = safeHttpUrl(url);
  if (!href) {
    const span = el("span", `${className || ""} blocked-link`.trim(), label);
    span.title = "not a link: only http(s) URLs are shown as links";
    return span;
  }
  const a = el("a", className, label);
  a.href = href;
  a.target = "_blank";
  a.rel = "noopener noreferrer";
  return a;
}

function newUuid() {
  if (globalThis.crypto && typeof crypto.randomUUID === "function") return crypto.randomUUID();
  const bytes = new Uint8Array(16);
  crypto.getRandomValues(bytes);
  bytes[6] = (bytes[6] & 0x0f) | 0x40;
  bytes[8] = (bytes[8] & 0x3f) | 0x80;
  const hex = Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

// ----------------------------------------------------------------------------- Markdown

// The subset the cards use: paragraphs, line breaks, **bold**, *italic* / _italic_, `code`,
// bullet and numbered lists, [links](http(s) URLs) and backslash escapes. Anything else
// (HTML included) stays text.

const LIST_ITEM = /^ {0,3}([-*+]|\d{1,9}[.)])[ \t]+(.*)$/;
const BLANK = /^[ \t]*$/;
const PUNCTUATION = /[!-/:-@[-`{-~]/;
const WORD = /[\p{L}\p{N}]/u;
const SPACE = /\s/;

function listMarker(line) {
  const match = LIST_ITEM.exec(line);
  if (!match) return null;
  const ordered = /\d/.test(match[1]);
  return { ordered, start: ordered ? parseInt(match[1], 10) : 1, content: match[2] };
}

/** Markdown text -> a <div class="markdown"> built from DOM nodes (never HTML parsing). */
export function renderMarkdown(text) {
  const root = el("div", "markdown");
  const lines = String(text ?? "")
    .replace(/\r\n?/g, "\n")
    .split("\n");
  let i = 0;
  while (i < lines.length) {
    if (BLANK.test(lines[i])) {
      i += 1;
      continue;
    }
    const first = listMarker(lines[i]);
    if (first) {
      const list = el(first.ordered ? "ol" : "ul");
      if (first.ordered && first.start !== 1) list.start = first.start;
      while (i < lines.length) {
        const item = listMarker(lines[i]);
        if (!item || item.ordered !== first.ordered) break;
        const itemLines = [item.content];
        i += 1;
        while (i < lines.length && !BLANK.test(lines[i]) && !listMarker(lines[i])) {
          itemLines.push(lines[i].replace(/^[ \t]+/, ""));
          i += 1;
        }
        const li = el("li");
        appendInline(li, itemLines.join("\n"), true);
        list.append(li);
        let next = i;
        while (next < lines.length && BLANK.test(lines[next])) next += 1;
        const following = next < lines.length ? listMarker(lines[next]) : null;
        if (!following || following.ordered !== first.ordered) break;
        i = next;
      }
      root.append(list);
      continue;
    }
    const paragraph = [];
    while (i < lines.length && !BLANK.test(lines[i])) {
      const marker = paragraph.length ? listMarker(lines[i]) : null;
      // A bullet list, or a numbered one starting at 1, interrupts a paragraph.
      if (marker && (!marker.ordered || marker.start === 1)) break;
      paragraph.push(paragraph.length ? lines[i].replace(/^[ \t]+/, "") : lines[i].trim());
      i += 1;
    }
    const p = el("p");
    appendInline(p, paragraph.join("\n").replace(/[ \t]+$/, ""), true);
    root.append(p);
  }
  return root;
}

/** Index just past a backslash escape or a code span starting at i, or i when neither. */
function skipAtom(text, i) {
  if (text[i] === "\\" && i + 1 < text.length) return i + 2;
  if (text[i] === "`") {
    let run = 0;
    while (text[i + run] === "`") run += 1;
    const close = findCodeClose(text, i + run, run);
    return close >= 0 ? close + run : i + run;
  }
  return i;
}

function findCodeClose(text, from, run) {
  let j = from;
  while (j < text.length) {
    if (text[j] === "`") {
      let length = 0;
      while (text[j + length] === "`") length += 1;
      if (length === run) return j;
      j += length;
    } else {
      j += 1;
    }
  }
  return -1;
}

function runLength(text, i, char) {
  let run = 0;
  while (text[i + run] === char) run += 1;
  return run;
}

function canOpen(text, i, run, char) {
  const after = text[i + run];
  if (after === undefined || SPACE.test(after)) return false;
  return char === "*" || i === 0 || !WORD.test(text[i - 1]);
}

function findEmphasisClose(text, from, char, size) {
  let j = from;
  while (j < text.length) {
    const skipped = skipAtom(text, j);
    if (skipped !== j) {
      j = skipped;
      continue;
    }
    if (text[j] === char) {
      const run = runLength(text, j, char);
      const before = text[j - 1];
      const after = text[j + run];
      const closes =
        run === size &&
        j > from &&
        !SPACE.test(before) &&
        (char === "*" || after === undefined || !WORD.test(after));
      if (closes) return j;
      j += run;
      continue;
    }
    j += 1;
  }
  return -1;
}

/** [label](destination "title") starting at i: {label, url, end}, or null. */
function parseLink(text, i) {
  let depth = 0;
  let j = i;
  let close = -1;
  while (j < text.length) {
    const skipped = skipAtom(text, j);
    if (skipped !== j) {
      j = skipped;
      continue;
    }
    if (text[j] === "[") depth += 1;
    if (text[j] === "]") {
      depth -= 1;
      if (depth === 0) {
        close = j;
        break;
      }
    }
    j += 1;
  }
  if (close < 0 || text[close + 1] !== "(") return null;
  let k = close + 2;
  while (text[k] === " " || text[k] === "\n") k += 1;
  let url = "";
  if (text[k] === "<") {
    const end = text.indexOf(">", k);
    if (end < 0) return null;
    url = text.slice(k + 1, end);
    k = end + 1;
  } else {
    let parens = 0;
    while (k < text.length && !SPACE.test(text[k])) {
      if (text[k] === "\\" && PUNCTUATION.test(text[k + 1] || "")) {
        url += text[k + 1];
        k += 2;
        continue;
      }
      if (text[k] === "(") parens += 1;
      if (text[k] === ")") {
        if (parens === 0) break;
        parens -= 1;
      }
      url += text[k];
      k += 1;
    }
  }
  while (text[k] === " " || text[k] === "\n") k += 1;
  if (text[k] === '"' || text[k] === "'") {
    const end = text.indexOf(text[k], k + 1);
    if (end < 0) return null;
    k = end + 1;
    while (text[k] === " " || text[k] === "\n") k += 1;
  }
  if (text[k] !== ")") return null;
  return { label: text.slice(i + 1, close), url, end: k + 1 };
}

function appendInline(parent, text, linksAllowed) {
  let buffer = "";
  const flush = () => {
    if (buffer) parent.append(document.createTextNode(buffer));
    buffer = "";
  };
  let i = 0;
  while (i < text.length) {
    const c = text[i];
    if (c === "\\") {
      const next = text[i + 1];
      if (next === "\n") {
        flush();
        parent.append(el("br"));
        i += 2;
        while (text[i] === " " || text[i] === "\t") i += 1;
      } else if (next !== undefined && PUNCTUATION.test(next)) {
        buffer += next;
        i += 2;
      } else {
        buffer += c;
        i += 1;
      }
      continue;
    }
    if (c === "\n") {
      const hard = / {2,}$/.test(buffer);
      buffer = buffer.replace(/[ \t]+$/, "");
      if (hard) {
        flush();
        parent.append(el("br"));
      } else {
        buffer += " ";
      }
      i += 1;
      while (text[i] === " " || text[i] === "\t") i += 1;
      continue;
    }
    if (c === "`") {
      const run = runLength(text, i, "`");
      const close = findCodeClose(text, i + run, run);
      if (close >= 0) {
        flush();
        let code = text.slice(i + run, close).replace(/\n/g, " ");
        if (code.length > 2 && code.startsWith(" ") && code.endsWith(" ")) code = code.slice(1, -1);
        parent.append(el("code", null, code));
        i = close + run;
      } else {
        buffer += "`".repeat(run);
        i += run;
      }
      continue;
    }
    if (c === "*" || c === "_") {
      const run = runLength(text, i, c);
      const size = run >= 2 ? 2 : 1;
      if (run <= 2 && canOpen(text, i, run, c)) {
        const close = findEmphasisClose(text, i + size, c, size);
        if (close >= 0) {
          flush();
          const node = el(size === 2 ? "strong" : "em");
          appendInline(node, text.slice(i + size, close), linksAllowed);
          parent.append(node);
          i = close + size;
          continue;
        }
      }
      buffer += c.repeat(run);
      i += run;
      continue;
    }
    if (c === "[" && linksAllowed) {
      const link = parseLink(text, i);
      if (link) {
        flush();
        const href = safeHttpUrl(link.url);
        const node = href ? el("a") : el("span", "blocked-link");
        if (href) {
          node.href = href;
          node.target = "_blank";
          node.rel = "noopener noreferrer";
        } else {
          node.title = "not a link: only http(s) URLs are shown as links";
        }
        appendInline(node, link.label, false);
        parent.append(node);
        i = link.end;
        continue;
      }
    }
    buffer += c;
    i += 1;
  }
  flush();
}

// ----------------------------------------------------------------------------- the service

/** One call to this service: {ok, status, body (parsed JSON or null), language}. */
async function call(method, path, { body, language } = {}) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (language) headers["Accept-Language"] = language;
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "same-origin",
      cache: "no-store",
      redirect: "error",
    });
  } catch (error) {
    return { ok: false, status: 0, body: null, error: String(error && error.message) };
  }
  const text = await response.text();
  let parsed = null;
  try {
    parsed = text ? JSON.parse(text) : null;
  } catch {
    parsed = null;
  }
  return {
    ok: response.ok,
    status: response.status,
    body: parsed,
    language: response.headers.get("Content-Language"),
  };
}

/** A readable account of a failed call: the 401 advice, an OperationOutcome's issues, etc. */
function problem(title, result) {
  const box = el("div", "problem");
  box.dataset.status = String(result.status ?? "");
  box.append(el("p", "problem__title", title));
  if (result.status === 401) {
    box.classList.add("problem--auth");
    box.append(el("p", "problem__text", AUTH_HELP));
    return box;
  }
  if (result.status === 0) {
    const reason = result.error ? ` (${result.error})` : "";
    box.append(el("p", "problem__text", `The service did not answer${reason}.`));
    return box;
  }
  const outcome = result.body;
  if (outcome && outcome.resourceType === "OperationOutcome" && Array.isArray(outcome.issue)) {
    box.append(el("p", "problem__text", `HTTP ${result.status}: OperationOutcome`));
    const list = el("ul", "problem__issues");
    for (const issue of outcome.issue) {
      const li = el("li");
      li.append(el("span", "issue__severity", `${issue.severity || "error"} (${issue.code || "?"})`));
      li.append(document.createTextNode(` ${issue.diagnostics || ""}`));
      const where = Array.isArray(issue.expression) ? issue.expression.join(", ") : "";
      if (where) {
        li.append(document.createTextNode(" at "));
        li.append(el("code", "issue__expression", where));
      }
      list.append(li);
    }
    box.append(list);
    return box;
  }
  if (result.message) {
    box.append(el("p", "problem__text", result.message));
  } else {
    box.append(el("p", "problem__text", `HTTP ${result.status}, with no OperationOutcome.`));
  }
  return box;
}

// ----------------------------------------------------------------------------- the page

const state = { services: [], fixtures: [], lastService: null };

const $ = (id) => document.getElementById(id);

function selectedService() {
  return state.services.find((s) => s.id === $("service").value) || null;
}

function selectedFixture() {
  const value = $("fixture").value;
  return state.fixtures.find((f) => `${f.hook}/${f.name}` === value) || null;
}

function showServiceDescription() {
  const service = selectedService();
  $("service-description").textContent = service
    ? `${service.id} · hook ${service.hook}. ${service.description || ""}`
    : "";
}

function onFixtureChange() {
  const fixture = selectedFixture();
  $("fixture-description").textContent = fixture ? fixture.description || "" : "";
  if (!fixture) return;
  const service =
    state.services.find((s) => s.id === fixture.service) ||
    state.services.find((s) => s.hook === fixture.hook);
  if (service) {
    $("service").value = service.id;
    showServiceDescription();
  }
}

function onSourceChange() {
  const paste = $("source-paste").checked;
  $("fixture-source").hidden = paste;
  $("paste-source").hidden = !paste;
}

function fillServices(services) {
  state.services = services;
  const select = $("service");
  clear(select);
  for (const service of services) {
    const option = el("option", null, `${service.title || service.id} (${service.hook})`);
    option.value = service.id;
    select.append(option);
  }
  showServiceDescription();
}

function fillFixtures(fixtures) {
  state.fixtures = fixtures;
  const select = $("fixture");
  clear(select);
  const groups = new Map();
  for (const fixture of fixtures) {
    if (!groups.has(fixture.hook)) {
      const group = el("optgroup");
      group.label = fixture.hook;
      groups.set(fixture.hook, group);
      select.append(group);
    }
    const option = el("option", null, fixture.name);
    option.value = `${fixture.hook}/${fixture.name}`;
    option.title = fixture.description || "";
    groups.get(fixture.hook).append(option);
  }
  if (!fixtures.length) {
    const option = el("option", null, "(no fixture patients: paste JSON instead)");
    option.value = "";
    select.append(option);
  }
  onFixtureChange();
}

function setCardsState(value, status) {
  $("cards").dataset.state = value;
  $("cards-status").textContent = status;
}

function isHookRequest(doc) {
  return (
    doc && typeof doc === "object" && !Array.isArray(doc) && "hook" in doc && "context" in doc
  );
}

/** The CDS Hooks request to send, or a problem box explaining why there is none. */
async function buildRequest(service) {
  if (!$("source-paste").checked) {
    const fixture = selectedFixture();
    if (!fixture) return { problem: problem("No fixture patient chosen", { message: "Pick one." }) };
    const path = `/preview/fixtures/${encodeURIComponent(fixture.hook)}/${encodeURIComponent(fixture.name)}`;
    const result = await call("GET", path);
    if (!result.ok || !result.body) return { problem: problem("Could not load the fixture", result) };
    return { request: { ...result.body, hookInstance: newUuid() } };
  }
  let doc;
  try {
    doc = JSON.parse($("json-input").value);
  } catch (error) {
    const message = `The pasted text is not JSON: ${error.message}`;
    return { problem: problem("Cannot read the pasted JSON", { message }) };
  }
  if (isHookRequest(doc)) return { request: doc };
  if (doc && typeof doc === "object" && typeof doc.resourceType === "string") {
    const body = { serviceId: service.id, bundle: doc };
    const patientId = $("patient-id").value.trim();
    if (patientId) body.patientId = patientId;
    const result = await call("POST", "/preview/requests", { body });
    if (!result.ok || !result.body) {
      return { problem: problem("Could not build a CDS Hooks request from these resources", result) };
    }
    return { request: result.body };
  }
  const message =
    "Paste a CDS Hooks request (an object with hook and context) or a FHIR Bundle or " +
    "resource (an object with resourceType).";
  return { problem: problem("Not a CDS Hooks request nor FHIR", { message }) };
}

async function send() {
  const service = selectedService();
  clear($("cards"));
  clear($("cards-problem"));
  clear($("system-actions"));
  $("request-json").textContent = "";
  $("response-json").textContent = "";
  if (!service) {
    $("cards-problem").append(problem("No CDS service to call", { message: "Discovery listed none." }));
    setCardsState("error", "");
    return;
  }
  setCardsState("loading", "Sending…");
  $("send").disabled = true;
  try {
    const built = await buildRequest(service);
    if (built.problem) {
      $("cards-problem").append(built.problem);
      setCardsState("error", "Nothing sent to the service.");
      return;
    }
    $("request-json").textContent = prettyJson(built.request);
    const language = $("language").value;
    const result = await call("POST", `/cds-services/${encodeURIComponent(service.id)}`, {
      body: built.request,
      language,
    });
    if (result.body !== null) $("response-json").textContent = prettyJson(result.body);
    if (!result.ok || !result.body || !Array.isArray(result.body.cards)) {
      $("cards-problem").append(problem(`${service.id} refused the request`, result));
      setCardsState("error", `HTTP ${result.status}`);
      return;
    }
    renderCards(service, result.body);
    const count = result.body.cards.length;
    const noun = count === 1 ? "card" : "cards";
    setCardsState(
      "done",
      `${count} ${noun} from ${service.id} · language ${result.language || language}`,
    );
  } finally {
    $("send").disabled = false;
  }
}

// ----------------------------------------------------------------------------- cards

function renderCards(service, response) {
  const container = $("cards");
  clear(container);
  container.dataset.count = String(response.cards.length);
  if (!response.cards.length) {
    container.append(el("p", "empty", "No cards: the service has nothing to say about this patient."));
  }
  for (const card of response.cards) container.append(renderCard(service, card));
  const actions = response.systemActions;
  if (Array.isArray(actions) && actions.length) {
    const box = $("system-actions");
    box.append(el("h3", null, "System actions"));
    box.append(el("pre", "json", prettyJson(actions)));
  }
}

function renderCard(service, card) {
  const indicator = INDICATOR_LABELS[card.indicator] ? card.indicator : "info";
  const article = el("article", `card card--${indicator}`);
  article.dataset.indicator = String(card.indicator);
  if (typeof card.uuid === "string") article.dataset.uuid = card.uuid;

  const header = el("header", "card__header");
  header.append(el("span", `card__badge card__badge--${indicator}`, INDICATOR_LABELS[indicator]));
  header.append(el("h3", "card__summary", card.summary ?? ""));
  article.append(header);

  if (typeof card.detail === "string" && card.detail) {
    const detail = renderMarkdown(card.detail);
    detail.classList.add("card__detail");
    article.append(detail);
  }

  if (card.source && typeof card.source === "object") article.append(renderSource(card.source));

  const status = el("p", "card__feedback");
  status.setAttribute("role", "status");

  if (Array.isArray(card.suggestions) && card.suggestions.length) {
    article.append(renderSuggestions(service, card, article, status));
  }
  if (Array.isArray(card.links) && card.links.length) article.append(renderLinks(card.links));
  article.append(renderOverride(service, card, article, status));
  article.append(status);
  return article;
}

function renderSource(source) {
  const p = el("p", "card__source");
  p.append(el("span", "card__label", "Source: "));
  const label = source.label ?? "";
  p.append(source.url ? externalLink(source.url, label, "card__source-link") : el("span", null, label));
  const topic = source.topic;
  if (topic && typeof topic === "object") {
    const text = topic.display ? `${topic.display} (${topic.code ?? ""})` : `${topic.code ?? ""}`;
    p.append(el("span", "card__topic", `Topic: ${text}`));
  }
  return p;
}

function renderSuggestions(service, card, article, status) {
  const box = el("div", "card__suggestions");
  const behavior = card.selectionBehavior ? ` (selection: ${card.selectionBehavior})` : "";
  box.append(el("p", "card__label", `Suggestions${behavior}`));
  for (const suggestion of card.suggestions) {
    const item = el("div", "suggestion");
    const button = el("button", "suggestion__button", suggestion.label ?? "");
    button.type = "button";
    button.setAttribute("aria-expanded", "false");
    if (suggestion.isRecommended) {
      button.classList.add("suggestion__button--recommended");
      button.append(el("span", "suggestion__recommended", "recommended"));
    }
    const panel = el("div", "suggestion__panel");
    panel.hidden = true;
    const actions = Array.isArray(suggestion.actions) ? suggestion.actions : [];
    if (!actions.length) panel.append(el("p", "hint", "No FHIR action."));
    const list = el("ol", "suggestion__actions");
    for (const action of actions) {
      const li = el("li", "action");
      li.append(el("span", "action__type", action.type ?? "?"));
      li.append(document.createTextNode(` ${action.description ?? ""}`));
      li.append(el("pre", "json action__json", prettyJson(action)));
      list.append(li);
    }
    if (actions.length) panel.append(list);
    const accept = el("button", "suggestion__accept", "Accept this suggestion");
    accept.type = "button";
    if (typeof card.uuid !== "string" || typeof suggestion.uuid !== "string") {
      accept.disabled = true;
      accept.title = "feedback needs the card's and the suggestion's uuid";
    }
    accept.addEventListener("click", () =>
      sendFeedback(service, card, article, status, {
        outcome: "accepted",
        acceptedSuggestions: [{ id: suggestion.uuid }],
      }),
    );
    panel.append(accept);
    button.addEventListener("click", () => {
      panel.hidden = !panel.hidden;
      button.setAttribute("aria-expanded", String(!panel.hidden));
    });
    item.append(button, panel);
    box.append(item);
  }
  return box;
}

function renderLinks(links) {
  const box = el("div", "card__links");
  box.append(el("p", "card__label", "Links"));
  const list = el("ul");
  box.append(list);
  for (const link of links) {
    const li = el("li");
    if (link.type === "smart") {
      li.classList.add("link--smart");
      li.append(el("span", "link__badge", "SMART app"));
      li.append(el("span", "link__label", link.label ?? ""));
      const where = safeHttpUrl(link.url) || "(not an http(s) URL)";
      li.append(el("span", "hint", ` launched by the EHR with its context; not from this page: ${where}`));
    } else {
      li.append(externalLink(link.url, link.label ?? "", "link__absolute"));
    }
    list.append(li);
  }
  return box;
}

function renderOverride(service, card, article, status) {
  const box = el("div", "card__override");
  const reasons = Array.isArray(card.overrideReasons) ? card.overrideReasons : [];
  const select = el("select", "override__reason");
  select.setAttribute("aria-label", "Override reason");
  const none = el("option", null, reasons.length ? "Choose an override reason…" : "No reason offered");
  none.value = "";
  select.append(none);
  reasons.forEach((reason, index) => {
    const option = el("option", null, reason.display || reason.code || `reason ${index + 1}`);
    option.value = String(index);
    select.append(option);
  });
  const comment = el("input", "override__comment");
  comment.type = "text";
  comment.placeholder = "Comment (optional)";
  comment.setAttribute("aria-label", "Override comment");
  const dismiss = el("button", "override__dismiss", "Dismiss");
  dismiss.type = "button";
  if (typeof card.uuid !== "string") {
    dismiss.disabled = true;
    dismiss.title = "feedback needs the card's uuid";
  }
  dismiss.addEventListener("click", () => {
    const item = { outcome: "overridden" };
    const overrideReason = {};
    const chosen = select.value === "" ? null : reasons[Number(select.value)];
    if (chosen) overrideReason.reason = chosen;
    if (comment.value.trim()) overrideReason.userComment = comment.value.trim();
    if (Object.keys(overrideReason).length) item.overrideReason = overrideReason;
    sendFeedback(service, card, article, status, item);
  });
  box.append(select, comment, dismiss);
  return box;
}

async function sendFeedback(service, card, article, status, item) {
  const body = {
    feedback: [{ card: card.uuid, ...item, outcomeTimestamp: new Date().toISOString() }],
  };
  clear(status);
  status.className = "card__feedback";
  status.textContent = "Sending feedback…";
  const path = `/cds-services/${encodeURIComponent(service.id)}/feedback`;
  const result = await call("POST", path, { body });
  clear(status);
  if (result.ok && result.body) {
    status.classList.add("card__feedback--ok");
    const stored = result.body.stored;
    status.textContent = `Feedback ${item.outcome}: the service stored ${stored} ${stored === 1 ? "entry" : "entries"}.`;
    article.dataset.feedback = item.outcome;
    article.classList.add(`card--${item.outcome}`);
    for (const button of article.querySelectorAll(".suggestion__accept, .override__dismiss")) {
      button.disabled = true;
    }
  } else {
    status.classList.add("card__feedback--error");
    status.append(problem("Feedback refused", result));
  }
}

// ----------------------------------------------------------------------------- start

async function start() {
  $("source-fixture").addEventListener("change", onSourceChange);
  $("source-paste").addEventListener("change", onSourceChange);
  $("fixture").addEventListener("change", onFixtureChange);
  $("service").addEventListener("change", showServiceDescription);
  $("send").addEventListener("click", send);
  onSourceChange();

  const [discovery, fixtures] = await Promise.all([
    call("GET", "/cds-services"),
    call("GET", "/preview/fixtures"),
  ]);
  if (discovery.ok && discovery.body && Array.isArray(discovery.body.services)) {
    fillServices(discovery.body.services);
  } else {
    $("page-problem").append(problem("Could not list the CDS services (GET /cds-services)", discovery));
    $("send").disabled = true;
  }
  fillFixtures(fixtures.ok && Array.isArray(fixtures.body) ? fixtures.body : []);
  if (!fixtures.ok) $("page-problem").append(problem("Could not list the fixture patients", fixtures));
  document.body.dataset.ready = "true";
}

start();
