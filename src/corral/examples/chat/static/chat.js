// corral chat, the browser side: plain JavaScript on the browser's WebSocket API.
// The protocol (JSON text messages) is described in corral/examples/chat/__init__.py.
// User text only ever reaches the page through textContent, never innerHTML.
"use strict";

const $ = (id) => document.getElementById(id);
const STORAGE_KEY = "corral-chat";  // name and room, so a reload rejoins
const FIRST_DELAY = 500;            // ms before the first reconnection attempt
const MAX_DELAY = 30000;            // ms, the longest wait between attempts

const chat = {
  socket: null,     // the current WebSocket, null while waiting to reconnect or after leaving
  name: "",
  room: "",
  you: null,        // this connection's member id, from "welcome"
  joined: false,    // "welcome" arrived on the current socket
  early: [],        // messages and presence that came before "welcome": used after it
  members: new Map(),  // member id -> name
  lastId: null,     // the last message id shown: "since" when we come back
  seen: new Set(),  // ids shown, so a message is never shown twice
  attempts: 0,      // failed connections in a row: the backoff exponent
  retry: null,      // the reconnection timer
};

function setStatus(state, text) {
  const status = $("status");
  status.dataset.state = state;  // online, connecting, offline
  status.textContent = text;
  $("send").disabled = state !== "online";
}

// Exponential backoff with jitter: 0.5 s, 1 s, 2 s... up to 30 s, each scaled by a random
// 50-100 %, so that clients dropped together do not all come back at the same moment.
function backoff(attempt) {
  const ceiling = Math.min(MAX_DELAY, FIRST_DELAY * 2 ** attempt);
  return ceiling / 2 + Math.random() * ceiling / 2;
}

function send(request) {
  if (chat.socket && chat.socket.readyState === WebSocket.OPEN) {
    chat.socket.send(JSON.stringify(request));
    return true;
  }
  return false;
}

function connect() {
  clearTimeout(chat.retry);
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const socket = new WebSocket(`${scheme}//${location.host}/ws`);
  chat.socket = socket;
  chat.joined = false;
  chat.early = [];
  setStatus("connecting", "connecting\u2026");
  socket.onopen = () => send({type: "join", room: chat.room, name: chat.name, since: chat.lastId});
  socket.onmessage = (event) => receive(JSON.parse(event.data));
  socket.onclose = (event) => {
    if (chat.socket !== socket) return;  // we left, or a newer socket replaced it
    chat.socket = null;
    chat.joined = false;
    const delay = backoff(chat.attempts++);
    setStatus("offline", `offline (${event.code}), retrying in ${Math.ceil(delay / 1000)} s`);
    chat.retry = setTimeout(connect, delay);
  };
}

function receive(msg) {
  switch (msg.type) {
    case "welcome":
      chat.joined = true;
      chat.attempts = 0;  // reset only now: a server that accepts then drops us backs off too
      chat.you = msg.you;
      $("room-title").textContent = "#" + msg.room;
      msg.history.forEach(show);
      chat.members = new Map(msg.members.map((member) => [member.id, member.name]));
      for (const early of chat.early) {
        if (early.type === "message") show(early);
        else updateMembers(early);
      }
      chat.early = [];
      showMembers();
      setStatus("online", "online");
      break;
    case "message":
    case "presence":
      if (!chat.joined) {
        chat.early.push(msg);
      } else if (msg.type === "message") {
        show(msg);
      } else {
        updateMembers(msg);
        showMembers();
        if (msg.joined && msg.joined.id !== chat.you) notice(`${msg.joined.name} joined`);
        if (msg.left) notice(`${msg.left.name} left`);
      }
      break;
    case "error":
      if (chat.joined) notice(msg.detail, "error");
      else leave(msg.detail);  // the join itself was refused: back to the form
      break;
  }
}

function append(item) {
  const list = $("messages");
  const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
  list.append(item);
  if (atBottom) list.scrollTop = list.scrollHeight;
}

function show(msg) {
  if (chat.seen.has(msg.id)) return;
  chat.seen.add(msg.id);
  chat.lastId = msg.id;
  const item = document.createElement("li");
  item.className = msg.name === chat.name ? "message mine" : "message";
  item.dataset.id = msg.id;
  const time = document.createElement("time");
  const when = new Date(msg.time);
  time.dateTime = when.toISOString();
  time.textContent = when.toLocaleTimeString([], {hour: "2-digit", minute: "2-digit"});
  const who = document.createElement("b");
  who.textContent = msg.name;
  const text = document.createElement("span");
  text.className = "text";
  text.textContent = msg.text;
  item.append(time, who, text);
  append(item);
}

function notice(text, kind) {
  const item = document.createElement("li");
  item.className = kind ? "notice " + kind : "notice";
  item.textContent = text;
  append(item);
}

// Presence as changes to the welcome's list, not the list each update carries: one member's
// join and leave come from one server process, in order, while updates from several
// processes may cross, so only the changes add up to the right list.
function updateMembers(msg) {
  if (msg.joined) chat.members.set(msg.joined.id, msg.joined.name);
  if (msg.left) chat.members.delete(msg.left.id);
}

function showMembers() {
  const sorted = [...chat.members].sort(([idA, a], [idB, b]) =>
    a < b ? -1 : a > b ? 1 : idA < idB ? -1 : idA > idB ? 1 : 0);
  $("members").replaceChildren(...sorted.map(([id, name]) => {
    const item = document.createElement("li");
    item.textContent = id === chat.you ? `${name} (you)` : name;
    return item;
  }));
}

function join(name, room) {
  Object.assign(chat, {name, room, lastId: null, attempts: 0});
  chat.seen.clear();
  sessionStorage.setItem(STORAGE_KEY, JSON.stringify({name, room}));
  $("messages").replaceChildren();
  chat.members.clear();
  $("members").replaceChildren();
  $("join-error").textContent = "";
  $("join").hidden = true;
  $("chat").hidden = false;
  $("leave").hidden = false;
  connect();
  $("text").focus();
}

function leave(why) {
  const socket = chat.socket;
  chat.socket = null;  // first: its close event must not schedule a reconnection
  chat.room = "";
  clearTimeout(chat.retry);
  if (socket) socket.close(1000);
  sessionStorage.removeItem(STORAGE_KEY);
  $("room-title").textContent = "";
  $("join-error").textContent = why || "";
  $("chat").hidden = true;
  $("leave").hidden = true;
  $("join").hidden = false;
  setStatus("offline", "offline");
}

$("join").addEventListener("submit", (event) => {
  event.preventDefault();
  join($("name").value.trim(), $("room").value.trim());
});

$("say").addEventListener("submit", (event) => {
  event.preventDefault();
  const input = $("text");
  if (input.value.trim() && send({type: "say", text: input.value})) input.value = "";
});

$("leave").addEventListener("click", () => leave());

// Back online: try at once rather than at the end of the current backoff.
window.addEventListener("online", () => {
  if (chat.room && !chat.socket) connect();
});

// A reload rejoins the same room under the same name; "#room" in the address fills the form.
const saved = JSON.parse(sessionStorage.getItem(STORAGE_KEY) || "null");
if (location.hash.length > 1) $("room").value = decodeURIComponent(location.hash.slice(1));
if (saved) join(saved.name, saved.room);
