// AlphaPulse dashboard: talks to the sink.websocket bridge (JSON contract in nodes/_websocket/_wire.py).
// Plain JS, no build step. Prices and sizes arrive as exact decimal strings; they are shown as
// they are and turned into numbers only for bars and spread arithmetic.
"use strict";

const TRADES_SHOWN = 40;
const SIGNALS_SHOWN = 12;

const state = {
  config: null,
  ws: null,
  messages: 0,
  instruments: new Map(),       // "sim_a:BTC-USD" -> {instrument, venue, symbol, ...}
  selected: null,
  book: { bids: new Map(), asks: new Map(), seq: null, depth: 20, updates: 0 },
  trades: [],
  bbo: new Map(),               // instrument -> {venue, symbol, bid, ask}
  signals: [],
  health: null,
  dirty: true,
};
window.alphapulse = state;      // for tests and curious people

const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key === "class") node.className = value;
    else if (key === "style") node.style.cssText = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) {
    node.append(child instanceof Node ? child : document.createTextNode(child == null ? "" : String(child)));
  }
  return node;
}

function decimals(text) {
  const dot = text.indexOf(".");
  return dot < 0 ? 0 : text.length - dot - 1;
}

function timeOf(ns) {
  if (!ns) return "";
  return new Date(Number(BigInt(ns) / 1000000n)).toISOString().slice(11, 23);
}

function fmtRate(value) {
  return value == null ? "" : Number(value).toFixed(value >= 100 ? 0 : 1);
}

// -- connection --------------------------------------------------------------------------------------
function socketUrl() {
  const token = new URLSearchParams(location.hash.slice(1)).get("token");
  const host = location.hostname.includes(":") ? `[${location.hostname}]` : location.hostname;
  const query = token ? `?token=${encodeURIComponent(token)}` : "";
  return `ws://${host}:${state.config.ws_port}/${query}`;
}

function send(obj) {
  if (state.ws && state.ws.readyState === WebSocket.OPEN) state.ws.send(JSON.stringify(obj));
}

function connect() {
  const ws = new WebSocket(socketUrl());
  state.ws = ws;
  ws.onopen = () => {
    setConnection(true);
    send({ op: "subscribe", channels: ["bbo", "signals"], instruments: ["*"] });
    send({ op: "subscribe", channels: ["health"] });
    if (state.selected) subscribeBook(state.selected);
  };
  ws.onmessage = (event) => {
    state.messages += 1;
    handle(JSON.parse(event.data));
    state.dirty = true;
  };
  ws.onclose = (event) => {
    const tokenMissing = state.config.token_required && !new URLSearchParams(location.hash.slice(1)).get("token");
    setConnection(false, tokenMissing ? "needs #token=… in the page URL"
      : event.code === 1008 ? "dropped (too slow)" : "reconnecting…");
    setTimeout(connect, 1000);
  };
}

function setConnection(up, text) {
  const node = $("connection");
  node.className = "connection " + (up ? "up" : "down");
  node.textContent = up ? "live" : text || "down";
}

// -- messages ----------------------------------------------------------------------------------------
function handle(msg) {
  switch (msg.type) {
    case "instruments":
      for (const inst of msg.instruments) state.instruments.set(inst.instrument, inst);
      refreshInstrumentList();
      break;
    case "instrument":
      state.instruments.set(msg.instrument, msg);
      refreshInstrumentList();
      break;
    case "book_snapshot":
      if (msg.instrument !== state.selected) break;
      state.book = {
        bids: new Map(msg.bids.map((l) => [l.price, l.size])),
        asks: new Map(msg.asks.map((l) => [l.price, l.size])),
        seq: msg.seq, depth: msg.depth, updates: state.book.updates + 1,
      };
      break;
    case "book_delta":
      if (msg.instrument !== state.selected || state.book.seq === null) break;
      if (msg.seq !== state.book.seq + 1) {       // missed something: start over from a snapshot
        state.book.seq = null;
        send({ op: "subscribe", channels: ["book"], instruments: [state.selected] });
        break;
      }
      applyLevels(state.book.bids, msg.bids);
      applyLevels(state.book.asks, msg.asks);
      state.book.seq = msg.seq;
      state.book.updates += 1;
      break;
    case "trades_snapshot":
      state.trades = msg.trades.filter((t) => t.instrument === state.selected).reverse().slice(0, TRADES_SHOWN);
      break;
    case "trade":
    case "swap":
      if (msg.instrument !== state.selected) break;
      state.trades.unshift(msg);
      state.trades.length = Math.min(state.trades.length, TRADES_SHOWN);
      break;
    case "bbo":
      state.bbo.set(msg.instrument, msg);
      break;
    case "signals_snapshot":
      state.signals = msg.signals.slice().reverse().slice(0, SIGNALS_SHOWN);
      break;
    case "signal":
      state.signals.unshift(msg);
      state.signals.length = Math.min(state.signals.length, SIGNALS_SHOWN);
      break;
    case "health":
      state.health = msg;
      break;
    case "error":
      console.warn("bridge error", msg.code, msg.error);
      break;
  }
}

function applyLevels(side, changes) {
  for (const { price, size } of changes) {
    if (Number(size) === 0) side.delete(price);
    else side.set(price, size);
  }
}

// -- instrument choice -------------------------------------------------------------------------------
function refreshInstrumentList() {
  const select = $("instrument");
  const keys = [...state.instruments.keys()].sort();
  if (select.options.length !== keys.length) {
    select.replaceChildren(...keys.map((k) => el("option", { value: k }, k)));
  }
  if (!state.selected && keys.length) {
    const wanted = new URLSearchParams(location.search).get("instrument");
    choose(wanted && state.instruments.has(wanted) ? wanted : keys[0]);
  }
  select.value = state.selected || "";
}

function subscribeBook(key) {
  send({ op: "subscribe", channels: ["book", "trades"], instruments: [key] });
}

function choose(key) {
  if (state.selected === key) return;
  if (state.selected) send({ op: "unsubscribe", channels: ["book", "trades"], instruments: [state.selected] });
  state.selected = key;
  state.book = { bids: new Map(), asks: new Map(), seq: null, depth: 20, updates: 0 };
  state.trades = [];
  subscribeBook(key);
  state.dirty = true;
}

// -- rendering ---------------------------------------------------------------------------------------
function sortedLevels(side, descending, depth) {
  const levels = [...side.entries()].map(([price, size]) => ({ price, size, p: Number(price), s: Number(size) }));
  levels.sort((a, b) => (descending ? b.p - a.p : a.p - b.p));
  return levels.slice(0, depth);
}

function levelRows(levels, maxTotal, places, reverse) {
  let total = 0;
  const rows = levels.map((l) => {
    total += l.s;
    const width = maxTotal > 0 ? (100 * total) / maxTotal : 0;
    return el("div", { class: "level" },
      el("div", { class: "bar", style: `width:${width.toFixed(1)}%` }),
      el("span", {}, l.price), el("span", {}, l.size), el("span", {}, total.toFixed(places)));
  });
  return reverse ? rows.reverse() : rows;
}

function renderBook() {
  const { book } = state;
  const depth = book.depth || 20;
  const bids = sortedLevels(book.bids, true, depth);
  const asks = sortedLevels(book.asks, false, depth);
  const sum = (levels) => levels.reduce((acc, l) => acc + l.s, 0);
  const maxTotal = Math.max(sum(bids), sum(asks));
  const places = Math.min(6, Math.max(0, ...bids.concat(asks).map((l) => decimals(l.size))));  // one format for totals
  $("asks").replaceChildren(...levelRows(asks, maxTotal, places, true));   // best ask next to the spread
  $("bids").replaceChildren(...levelRows(bids, maxTotal, places, false));
  $("book-title").textContent = state.selected || "";
  $("book-updates").textContent = String(book.updates);
  $("book-seq").textContent = book.seq === null ? "–" : String(book.seq);
  const bestBid = bids[0], bestAsk = asks[0];
  $("best-bid").textContent = bestBid ? bestBid.price : "–";
  $("best-ask").textContent = bestAsk ? bestAsk.price : "–";
  if (bestBid && bestAsk) {
    const places = Math.max(decimals(bestBid.price), decimals(bestAsk.price));
    const spread = bestAsk.p - bestBid.p;
    const mid = (bestAsk.p + bestBid.p) / 2;
    $("spread-value").textContent = spread.toFixed(places);
    const bps = (spread / mid) * 1e4;
    $("spread-bps").textContent = `(${bps > 0 && bps < 0.1 ? bps.toPrecision(2) : bps.toFixed(2)} bps)`;
  } else {
    $("spread-value").textContent = "–";
    $("spread-bps").textContent = "";
  }
}

function renderTrades() {
  $("trades").replaceChildren(...state.trades.map((t) => t.type === "swap"
    ? el("tr", { "data-testid": "trade-row" },
      el("td", {}, `block ${t.block}`), el("td", {}, "swap"),
      el("td", { class: "num" }, `${t.amount_in} → ${t.amount_out}`), el("td", { class: "num" }, ""))
    : el("tr", { "data-testid": "trade-row" },
      el("td", {}, timeOf(t.ts)), el("td", { class: t.side }, t.side),
      el("td", { class: `num ${t.side}` }, t.price), el("td", { class: "num" }, t.size))));
}

function renderVenues() {
  const bySymbol = new Map();
  for (const q of state.bbo.values()) {
    if (!bySymbol.has(q.symbol)) bySymbol.set(q.symbol, []);
    bySymbol.get(q.symbol).push(q);
  }
  const groups = [...bySymbol.keys()].sort().map((symbol) => {
    const quotes = bySymbol.get(symbol).sort((a, b) => a.venue.localeCompare(b.venue));
    const bids = quotes.filter((q) => q.bid).map((q) => Number(q.bid.price));
    const asks = quotes.filter((q) => q.ask).map((q) => Number(q.ask.price));
    const bestBid = bids.length ? Math.max(...bids) : null;
    const bestAsk = asks.length ? Math.min(...asks) : null;
    const crossed = bestBid !== null && bestAsk !== null && bestBid > bestAsk;
    const rows = quotes.map((q) =>
      el("tr", { "data-testid": "bbo-row" },
        el("td", {}, q.venue),
        el("td", { class: "num buy" + (q.bid && Number(q.bid.price) === bestBid ? " best" : "") }, q.bid ? q.bid.price : "–"),
        el("td", { class: "num" }, q.bid ? q.bid.size : ""),
        el("td", { class: "num sell" + (q.ask && Number(q.ask.price) === bestAsk ? " best" : "") }, q.ask ? q.ask.price : "–"),
        el("td", { class: "num" }, q.ask ? q.ask.size : "")));
    const note = crossed ? "crossed: best bid above best ask" : "";
    return el("div", { class: "venue-group" },
      el("h3", {}, symbol, el("span", { class: "cross crossed" }, note)),
      el("table", {},
        el("thead", {}, el("tr", {}, el("th", {}, "Venue"), el("th", { class: "num" }, "Bid"),
          el("th", { class: "num" }, "Size"), el("th", { class: "num" }, "Ask"), el("th", { class: "num" }, "Size"))),
        el("tbody", {}, ...rows)));
  });
  $("venues").replaceChildren(...groups);
}

function renderSignals() {
  $("signals").replaceChildren(...state.signals.map((s) =>
    el("tr", { "data-testid": "signal-row" },
      el("td", {}, timeOf(s.ts)), el("td", {}, s.symbol),
      el("td", { class: "buy" }, `${s.buy.venue} @ ${s.buy.price}`),
      el("td", { class: "sell" }, `${s.sell.venue} @ ${s.sell.price}`),
      el("td", { class: "num" }, Number(s.net_spread_bps).toFixed(2)),
      el("td", { class: "num" }, Number(s.net_profit).toFixed(2)))));
}

function renderHealth() {
  const health = state.health;
  if (!health) return;
  $("topology").textContent = health.topology ? `(${health.topology})` : "";
  $("health").replaceChildren(...health.nodes.map((n) =>
    el("tr", { "data-testid": "health-row" },
      el("td", {}, n.node), el("td", { class: "muted" }, n.kind || ""),
      el("td", { class: `status-${n.status}`, title: n.trouble || n.error || "" }, n.status,
        ...(n.trouble ? [el("div", { class: "trouble", "data-testid": "trouble" }, n.trouble)] : [])),
      el("td", { class: "num" }, fmtRate(n.rates && n.rates.in)),
      el("td", { class: "num" }, fmtRate(n.rates && n.rates.out)),
      el("td", { class: "num" }, n.received ?? ""), el("td", { class: "num" }, n.sent ?? ""),
      el("td", { class: "num" }, n.dropped ?? ""), el("td", { class: "num" }, n.errors ?? ""),
      el("td", { class: "num" }, n.messages_lost ?? ""))));
}

function render() {
  if (state.dirty) {
    state.dirty = false;
    $("messages").textContent = String(state.messages);
    renderBook();
    renderTrades();
    renderVenues();
    renderSignals();
    renderHealth();
  }
  requestAnimationFrame(render);
}

async function main() {
  $("instrument").addEventListener("change", (event) => choose(event.target.value));
  const response = await fetch("config.json", { cache: "no-store" });
  state.config = await response.json();
  state.book.depth = state.config.book_levels;
  connect();
  requestAnimationFrame(render);
}

main();
