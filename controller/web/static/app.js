// Synod's read-only web view: one GET stream of server-sent events, drawn with cytoscape.js.
// Every value from the node is put into the page as text (textContent), never as markup.
"use strict";

const TOKEN_KEY = "synod.viewer.token";
// More switches (or hosts) than this: sites start collapsed into one node each.
const COLLAPSE_AT = 60, COLLAPSE_HOSTS_AT = 240;
const RETRY_MS = [1000, 2000, 4000, 5000];
const PALETTE = ["#1565c0", "#2e7d32", "#6a1b9a", "#ef6c00", "#00838f", "#ad1457", "#4e342e",
                 "#558b2f", "#283593", "#00695c", "#9e9d24", "#5d4037"];

const state = { cy: null, view: null, updates: 0, renderedAt: 0, firstRenderMs: 0,
                expanded: new Set(), collapsed: false, big: null, shape: "", retries: 0,
                abort: null };
window.synod = state; // for tests and the curious: what the page last drew
state.redraw = () => { state.shape = ""; draw(state.view); };

const $ = (id) => document.getElementById(id);

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}

function short(id) { return id ? String(id).slice(0, 12) : ""; }

function setConn(up, text) {
  const c = $("conn");
  c.className = "conn " + (up ? "up" : "down");
  c.dataset.state = up ? "up" : "down";
  c.textContent = text;
}

// ---------------------------------------------------------------- token and stream

function askToken(message) {
  $("main").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = message || "";
  $("token").focus();
}

$("login").addEventListener("submit", (ev) => {
  ev.preventDefault(); // nothing is submitted anywhere: the token only goes into this tab
  const t = $("token").value.trim();
  if (!t) return;
  sessionStorage.setItem(TOKEN_KEY, t);
  $("token").value = "";
  $("login").hidden = true;
  $("main").hidden = false;
  connect();
});

async function connect() {
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (!token) { askToken(""); setConn(false, "no token"); return; }
  const abort = new AbortController();
  state.abort = abort;
  let response;
  try {
    response = await fetch("/api/events", { headers: { "Authorization": "Bearer " + token },
                                            cache: "no-store", signal: abort.signal });
  } catch (e) {
    return retry("the node does not answer");
  }
  if (response.status === 401 || response.status === 403) {
    sessionStorage.removeItem(TOKEN_KEY);
    setConn(false, "token refused");
    askToken("The node refused this token: " + (await response.text()).trim());
    return;
  }
  if (!response.ok) return retry("the node answered " + response.status);
  state.retries = 0;
  setConn(true, "live");
  try {
    await readEvents(response.body.getReader());
  } catch (e) { /* the connection broke: reconnect below */ }
  retry("the node went away");
}

function retry(why) {
  const wait = RETRY_MS[Math.min(state.retries, RETRY_MS.length - 1)];
  state.retries += 1;
  setConn(false, why + "; reconnecting in " + Math.round(wait / 1000) + " s");
  setTimeout(connect, wait);
}

async function readEvents(reader) {
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      let event = "message", data = "";
      for (const line of block.split("\n")) {
        if (line.startsWith("event: ")) event = line.slice(7);
        else if (line.startsWith("data: ")) data += line.slice(6);
      }
      if (event === "snapshot") show(JSON.parse(data));
      else if (event === "denied") {
        sessionStorage.removeItem(TOKEN_KEY);
        askToken("The node no longer accepts this token: " + JSON.parse(data));
        throw new Error("denied");
      }
    }
  }
}

// ---------------------------------------------------------------- drawing

function colours(view) {
  const masters = [...new Set(view.topology.switches.map((s) => s.master).filter(Boolean))].sort();
  const out = {};
  masters.forEach((m, i) => { out[m] = PALETTE[i % PALETTE.length]; });
  return out;
}

function elements(view, colour) {
  const topo = view.topology;
  const els = [];
  const bySite = {};
  for (const s of topo.switches) (bySite[s.site] = bySite[s.site] || []).push(s);
  const collapsed = state.collapsed;
  const siteOf = {};
  const shown = (site) => !collapsed || state.expanded.has(site);
  for (const site of topo.sites) {
    const n = (bySite[site.name] || []).length;
    const label = shown(site.name) ? site.name + (site.separated ? " — separated" : "")
      : site.name + "\n" + n + " switches" + (site.separated ? "\nseparated" : "");
    els.push({ group: "nodes", data: { id: "site:" + site.name, label: label, kind: "site" },
               classes: "site" + (site.separated ? " separated" : "") + (shown(site.name) ? "" : " collapsed") });
  }
  for (const s of topo.switches) {
    siteOf[s.dpid] = s.site;
    if (!shown(s.site)) continue;
    els.push({ group: "nodes", data: { id: "sw:" + s.dpid, parent: "site:" + s.site, kind: "switch",
      label: (s.name || s.dpid.replace(/^0+(?=.)/, "")) + "\n" + (s.master || "no master") +
             " · gen 0x" + s.generation_id.toString(16) + (s.flows ? "\n" + s.flows + " flows" : ""),
      colour: colour[s.master] || "#9e9e9e" }, classes: "switch" + (s.connected ? "" : " disconnected") });
  }
  const aggregated = {};
  for (const l of topo.links) {
    const sa = siteOf[l.a] || "?", sb = siteOf[l.b] || "?";
    if (shown(sa) && shown(sb)) {
      els.push({ group: "edges", data: { id: "ln:" + l.id, source: "sw:" + l.a, target: "sw:" + l.b,
                 state: l.state, why: l.why }, classes: "link " + l.state + (l.wan ? " wan" : "") });
      continue;
    }
    if (sa === sb) continue; // inside a collapsed site
    const ends = [sa, sb].sort();
    const key = ends.join("|");
    const agg = aggregated[key] || (aggregated[key] = { ends: ends, n: 0, cut: 0, a: sa, b: sb, la: l.a, lb: l.b });
    agg.n += 1;
    if (l.state === "cut") agg.cut += 1;
  }
  for (const [key, agg] of Object.entries(aggregated)) {
    const end = (site, dpid) => shown(site) ? "sw:" + dpid : "site:" + site;
    const st = agg.cut ? "cut" : "up";
    els.push({ group: "edges", data: { id: "agg:" + key, source: end(agg.a, agg.la), target: end(agg.b, agg.lb),
               state: st, label: agg.n > 1 ? agg.n + " links" + (agg.cut ? ", " + agg.cut + " cut" : "") : "" },
               classes: "link wan " + st });
  }
  for (const h of topo.hosts) {
    const site = siteOf[h.dpid];
    if (!site || !shown(site)) continue;
    els.push({ group: "nodes", data: { id: "h:" + h.mac, parent: "site:" + site, kind: "host",
               label: h.ip || h.mac }, classes: "host" });
    els.push({ group: "edges", data: { id: "he:" + h.mac, source: "h:" + h.mac, target: "sw:" + h.dpid },
               classes: "hostlink" });
  }
  for (const s of topo.services) {
    if (!s.site || !shown(s.site)) continue;
    els.push({ group: "nodes", data: { id: "svc:" + s.name, parent: "site:" + s.site, kind: "service",
               label: s.name + "\n" + s.state }, classes: "service " + s.state });
  }
  return els;
}

// Positions without a physics layout: the first site (the cloud) in the middle, the others
// on a circle around it, so a WAN link to the cloud never crosses another site; switches in a
// grid inside their site, hosts and services under them. Deterministic and O(n).
function positions(view) {
  const topo = view.topology, pos = {};
  const bySite = {};
  for (const s of topo.switches) (bySite[s.site] = bySite[s.site] || []).push(s);
  const hostsOf = {};
  for (const h of topo.hosts) (hostsOf[h.dpid] = hostsOf[h.dpid] || []).push(h);
  const svcOf = {};
  for (const s of topo.services) if (s.site) (svcOf[s.site] = svcOf[s.site] || []).push(s);
  const others = Math.max(1, topo.sites.length - 1);
  const radius = Math.max(340, (others * 420) / (2 * Math.PI));
  topo.sites.forEach((site, i) => {
    const angle = Math.PI + (2 * Math.PI * (i - 1)) / others; // from the left, clockwise
    const cx = i === 0 ? 0 : Math.round(1.4 * radius * Math.cos(angle)); // a wide screen
    const cy = i === 0 ? 0 : Math.round(radius * Math.sin(angle));
    pos["site:" + site.name] = { x: cx, y: cy };
    const sws = bySite[site.name] || [];
    const per = Math.max(1, Math.ceil(Math.sqrt(sws.length)));
    const step = Math.min(150, 380 / per);
    sws.forEach((s, j) => {
      const x = cx + (j % per) * step, y = cy + Math.floor(j / per) * step * 1.1;
      pos["sw:" + s.dpid] = { x: x, y: y };
      (hostsOf[s.dpid] || []).forEach((h, k) => { pos["h:" + h.mac] = { x: x - 30 + k * 60, y: y + 80 }; });
    });
    (svcOf[site.name] || []).forEach((s, k) => { pos["svc:" + s.name] = { x: cx + k * 90, y: cy - 80 }; });
  });
  return pos;
}

const STYLE = [
  { selector: "node", style: { "label": "data(label)", "text-wrap": "wrap", "font-size": 10,
      "text-valign": "bottom", "text-margin-y": 3 } },
  { selector: "node.site", style: { "background-color": "#eef2f7", "border-color": "#9fb0c8",
      "border-width": 1, "text-valign": "top", "font-size": 13, "font-weight": "bold", "padding": 18,
      "shape": "round-rectangle" } },
  { selector: "node.site.collapsed", style: { "width": 110, "height": 70, "text-valign": "center" } },
  { selector: "node.site.separated", style: { "border-color": "#d32f2f", "border-width": 3,
      "border-style": "dashed", "background-color": "#fdecea", "color": "#b71c1c" } },
  { selector: "node.switch", style: { "shape": "round-rectangle", "width": 34, "height": 22,
      "background-color": "data(colour)" } },
  { selector: "node.switch.disconnected", style: { "background-opacity": 0.35 } },
  { selector: "node.host", style: { "shape": "ellipse", "width": 12, "height": 12,
      "background-color": "#78909c", "font-size": 8 } },
  { selector: "node.service", style: { "shape": "diamond", "width": 18, "height": 18,
      "background-color": "#8e24aa", "font-size": 9 } },
  { selector: "edge", style: { "width": 2, "line-color": "#607d8b", "curve-style": "bezier",
      "label": "data(label)", "font-size": 9 } },
  // Bowed, so a WAN link never runs straight through a switch between its ends.
  { selector: "edge.wan", style: { "width": 3, "line-color": "#37474f",
      "curve-style": "unbundled-bezier", "control-point-distances": [50],
      "control-point-weights": [0.5] } },
  { selector: "edge.cut", style: { "line-color": "#d32f2f", "line-style": "dashed",
      "line-dash-pattern": [6, 4], "width": 3, "target-arrow-shape": "tee",
      "source-arrow-shape": "tee", "target-arrow-color": "#d32f2f", "source-arrow-color": "#d32f2f" } },
  { selector: "edge.hostlink", style: { "width": 1, "line-color": "#b0bec5" } },
];

function draw(view) {
  const colour = colours(view);
  const n = view.topology.switches.length;
  // Collapsed when the picture would be too big; decided again only when the size crosses
  // the line, so a site the user opened stays open while rows come and go.
  const big = n > COLLAPSE_AT || view.topology.hosts.length > COLLAPSE_HOSTS_AT;
  if (big !== state.big) {
    state.big = big;
    state.collapsed = big;
    state.expanded.clear();
    state.shape = "";
  }
  if (state.cy === null) {
    state.cy = cytoscape({ container: $("cy"), style: STYLE, elements: [], wheelSensitivity: 0.3,
                           autoungrabify: true, boxSelectionEnabled: false });
    state.cy.on("tap", "node.site", (ev) => {
      if (!state.collapsed) return;
      const site = ev.target.id().slice(5);
      if (state.expanded.has(site)) state.expanded.delete(site); else state.expanded.add(site);
      state.shape = "";
      draw(state.view);
    });
  }
  const cy = state.cy;
  const els = elements(view, colour);
  const shape = els.map((e) => e.data.id).join(",");
  cy.batch(() => {
    if (shape !== state.shape) {
      cy.elements().remove();
      cy.add(els);
      const pos = positions(view);
      cy.nodes().forEach((node) => { if (pos[node.id()] && !node.isParent()) node.position(pos[node.id()]); });
      cy.nodes(".site.collapsed").forEach((node) => node.position(pos[node.id()]));
    } else {
      for (const e of els) {
        const have = cy.getElementById(e.data.id);
        have.data(e.data);
        have.classes(e.classes);
      }
    }
  });
  if (shape !== state.shape) { cy.fit(undefined, 30); state.shape = shape; }
  const legend = $("legend");
  legend.replaceChildren(el("span", "master: "));
  for (const [m, c] of Object.entries(colour)) {
    const sw = el("span", null, "swatch");
    sw.style.background = c;
    legend.append(sw, el("span", m));
  }
  legend.append(el("span", null, "swatch cut"), el("span", "cut link"));
  if (state.collapsed) legend.append(el("span", "  · " + n + " switches: click a site to open or close it"));
}

function panel(view) {
  const c = view.cluster, node = view.node, topo = view.topology;
  $("where").textContent = "cluster " + node.cluster + " · node " + short(node.node_id) +
    (node.site ? " (" + node.site + ")" : "");
  const cuts = topo.links.filter((l) => l.state === "cut");
  const separated = topo.sites.filter((s) => s.separated).map((s) => s.name);
  const banner = $("banner");
  const parts = [];
  parts.push(cuts.length ? cuts.length + " link" + (cuts.length > 1 ? "s" : "") + " cut" : "all links up");
  if (separated.length) parts.push("separated from this node: " + separated.join(", "));
  const unknown = c.members.filter((m) => m.digest === "unknown").length;
  const differ = c.members.filter((m) => m.digest === "differs").length;
  parts.push(c.all_equal ? "digests equal on every member"
    : [differ ? differ + " member" + (differ > 1 ? "s" : "") + " with another digest" : "",
       unknown ? unknown + " member" + (unknown > 1 ? "s" : "") + " not reached (digest unknown)" : ""]
      .filter(Boolean).join(", "));
  banner.textContent = parts.join(" · ");
  banner.dataset.cut = String(cuts.length);
  banner.dataset.separated = separated.join(",");
  banner.dataset.equal = c.all_equal ? "yes" : "no";
  banner.className = cuts.length || separated.length || !c.all_equal ? "alarm" : "";

  $("cluster-summary").replaceChildren(
    el("div", c.reachable + " of " + c.total + " members reached · " + c.ops + " ops · " +
              view.cluster.flows_total + " flows"),
    el("div", "state digest " + c.state_digest.slice(0, 24) + "…", "mono"));
  const body = $("members").tBodies[0];
  body.replaceChildren();
  for (const m of c.members) {
    const tr = document.createElement("tr");
    tr.dataset.node = m.node_id;
    tr.dataset.up = m.up ? "yes" : "no";
    tr.dataset.digest = m.digest;
    tr.append(el("td", short(m.node_id) + (m.self ? " (this)" : ""), "mono"),
              el("td", m.sites.join(", ")),
              el("td", m.up ? "yes" : "no", m.up ? "yes" : "no"),
              el("td", m.digest === "unknown" && m.last_known !== "unknown"
                       ? "unknown (last: " + m.last_known + ")" : m.digest, m.digest),
              el("td", m.digest === "unknown" ? "" : String(m.ops_behind)));
    body.append(tr);
  }
  const lin = c.lineage;
  const lines = [el("div", lin.name + " " + short(lin.cluster_id), "mono"),
                 el("div", lin.seceded ? "seceded from " + short(lin.parent) + " (confirmed by " +
                    lin.confirmed_by + "); left behind: " + lin.left.map(short).join(", ")
                    : "original lineage (not seceded)")];
  for (const m of lin.met) {
    lines.push(el("div", "met " + m.name + " " + short(m.cluster_id) + ": " + m.relation +
      (m.decided ? ", decided " + m.decided : ", undecided") + (m.joined ? ", joined" : "")));
  }
  $("lineage").replaceChildren(...lines);
  $("sites").replaceChildren(...topo.sites.map((s) => {
    const li = el("li", s.name + ": " + s.switches + " switches" + (s.node ? ", node " + short(s.node) : "") +
                  (s.separated ? " — separated" : ""), s.separated ? "separated" : "");
    li.dataset.site = s.name;
    li.dataset.separated = s.separated ? "yes" : "no";
    return li;
  }));
  $("services").replaceChildren(...(topo.services.length ? topo.services.map((s) =>
    el("li", s.name + ": " + s.state + (s.node ? " on " + (s.site || short(s.node)) : "") +
             (s.desired_state ? " (desired " + s.desired_state + ")" : "")))
    : [el("li", "none declared")]));
  $("slots").replaceChildren(...(c.slots.length ? c.slots.map((s) =>
    el("li", s.slot + " = " + s.value + " (" + s.voters + " votes)")) : [el("li", "none yet")]));
  $("conflicts").replaceChildren(...(c.conflicts.length ? c.conflicts.map((x) =>
    el("li", x.kind + ": " + x.description)) : [el("li", "no conflicts")]));
}

function show(view) {
  const t0 = performance.now();
  state.view = view;
  panel(view);
  draw(view);
  state.updates += 1;
  state.renderedAt = performance.now();
  if (!state.firstRenderMs) state.firstRenderMs = state.renderedAt;
  state.lastRenderCostMs = state.renderedAt - t0;
  document.body.dataset.updates = String(state.updates);
}

// `synod emulate` prints a link with the token in the fragment (#token=...), which the
// browser never sends to a server: keep it in this tab and take it out of the address bar.
if (location.hash.startsWith("#token=")) {
  sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(location.hash.slice(7)));
  history.replaceState(null, "", location.pathname);
}
if (sessionStorage.getItem(TOKEN_KEY)) connect(); else askToken("");
