// The staff alarm board: tiles from the server's whole state (server-sent events), acknowledge, sound.
"use strict";
(function () {
  const messages = JSON.parse(document.getElementById("messages").textContent);
  const t = (key) => messages[key] || key;
  const board = document.getElementById("board");
  const tilesEl = document.getElementById("tiles");
  const connEl = document.getElementById("connection");
  const soundBtn = document.getElementById("sound");
  const room = board.dataset.room;
  const csrf = board.dataset.csrf;
  const canAck = board.dataset.canAck === "yes";
  const tablet = board.dataset.tablet === "yes";
  const picker = document.getElementById("picker");
  const askPin = board.dataset.pin === "yes";
  const pinForm = document.getElementById("pin-form");
  const pinInput = document.getElementById("pin");
  let pinFor = null; // [alarmId, btn, person] while the PIN is typed
  const answers = {}; // alarm_id -> the answer to this board's acknowledge, shown at once
  let lastHeard = 0;
  let tiles = [];
  let source = null;

  // ---- connection: EventSource reconnects by itself; a watchdog shows "connection lost" when nothing is heard
  function setConnected(ok) {
    connEl.classList.toggle("lost", !ok);
    connEl.classList.toggle("ok", ok);
    connEl.textContent = ok ? t("board.connected") : t("board.connection_lost");
    board.classList.toggle("stale", !ok);
  }
  function connect() {
    if (source) source.close();
    source = new EventSource("/api/board/events" + (room ? "?room=" + encodeURIComponent(room) : ""));
    source.addEventListener("state", (ev) => {
      lastHeard = Date.now();
      setConnected(true);
      const state = JSON.parse(ev.data);
      tiles = state.tiles;
      document.getElementById("broker").hidden = state.broker !== false;
      render();
    });
    source.addEventListener("ping", () => { lastHeard = Date.now(); setConnected(true); });
    source.onerror = async () => {
      setConnected(false);
      if (source.readyState !== EventSource.CLOSED) return; // it reconnects by itself
      try { // refused (logged out, session over, tablet removed): to the login page; else try again
        const res = await fetch("/api/board", { credentials: "same-origin" });
        if (res.status === 401) { window.location.href = "/login"; return; }
      } catch (e) { /* the gateway is away: keep trying */ }
      setTimeout(connect, 2000);
    };
  }
  setInterval(() => {
    if (Date.now() - lastHeard > 12000) {
      setConnected(false);
      if (lastHeard && Date.now() - lastHeard > 20000) { lastHeard = Date.now() - 12001; connect(); }
    }
  }, 1000);

  // ---- tiles
  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function statusWord(tile) {
    if (tile.status === "alarm") return t("status.alarm") + " · " + t("priority." + tile.priority);
    return t("status." + tile.status);
  }
  function render() {
    tilesEl.replaceChildren(...tiles.map(renderTile));
    updateSound();
  }
  function renderTile(tile) {
    const div = el("section", "tile " + tile.status + (tile.priority ? " p-" + tile.priority : ""));
    div.dataset.crib = tile.crib_id;
    div.dataset.status = tile.status;
    div.append(el("h2", "crib", tile.crib_label));
    if (!room) div.append(el("div", "room", tile.room_label));
    div.append(el("div", "status", statusWord(tile)));
    const flags = el("ul", "flags");
    if (tile.test) flags.append(el("li", "test", t("flag.test")));
    if (tile.online === false && tile.status !== "offline") flags.append(el("li", "offline", t("status.offline")));
    if (tile.low_battery) flags.append(el("li", "battery", t("flag.low_battery") + " " + tile.battery_pct + "%"));
    if (tile.maintenance_reason !== null && tile.status !== "maintenance") flags.append(el("li", "maint", t("status.maintenance")));
    if (tile.maintenance_reason !== null) {
      const until = new Date(tile.maintenance_until * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
      flags.append(el("li", "reason", tile.maintenance_reason + " · " + t("board.until") + " " + until));
    }
    if (flags.childElementCount) div.append(flags);
    for (const alarm of tile.alarms) {
      const row = el("div", "alarm " + (alarm.acknowledged_by ? "taken" : "waiting"));
      row.dataset.alarm = alarm.alarm_id;
      row.append(el("span", "kind", t("kind." + alarm.kind) + (alarm.test ? " (" + t("flag.test") + ")" : "")));
      if (alarm.acknowledged_by) {
        row.append(el("span", "by", t("board.acknowledged_by") + " " + alarm.acknowledged_by));
      } else if (canAck) {
        const btn = el("button", "ack", t("board.acknowledge"));
        btn.type = "button";
        btn.addEventListener("click", () => (tablet ? pickPerson(alarm.alarm_id, btn) : acknowledge(alarm.alarm_id, btn)));
        row.append(btn);
      }
      if (answers[alarm.alarm_id]) row.append(el("span", "answer", answers[alarm.alarm_id]));
      div.append(row);
    }
    return div;
  }
  // A shared wall tablet: the person taps their staff id; the record says both the tablet and the person.
  async function pickPerson(alarmId, btn) {
    const res = await fetch("/api/board/people", { credentials: "same-origin" });
    const people = res.ok ? (await res.json()).people : [];
    const list = document.getElementById("people");
    list.replaceChildren(...people.map((id) => {
      const b = el("button", "person", id);
      b.type = "button";
      b.addEventListener("click", () => {
        if (askPin) { pinFor = [alarmId, btn, id]; pinInput.value = ""; pinForm.hidden = false; pinInput.focus(); return; }
        picker.hidden = true;
        acknowledge(alarmId, btn, id);
      });
      return b;
    }));
    pinForm.hidden = true;
    picker.hidden = false;
  }
  pinForm.addEventListener("submit", (ev) => {
    ev.preventDefault();
    picker.hidden = true;
    if (pinFor) acknowledge(pinFor[0], pinFor[1], pinFor[2], pinInput.value);
    pinFor = null;
  });
  document.getElementById("picker-cancel").addEventListener("click", () => { picker.hidden = true; });

  async function acknowledge(alarmId, btn, person, pin) {
    btn.disabled = true;
    answers[alarmId] = t("board.sending");
    render();
    try {
      const headers = { "X-CSRF-Token": csrf };
      if (person) headers["Content-Type"] = "application/json";
      const res = await fetch("/api/alarms/" + encodeURIComponent(alarmId) + "/ack", {
        method: "POST", headers, credentials: "same-origin", body: person ? JSON.stringify({ by: person, pin: pin || null }) : undefined,
      });
      const body = await res.json();
      if (body.result === "yours") answers[alarmId] = t("board.ack_yours");
      else if (body.result === "taken") answers[alarmId] = t("board.ack_taken") + " " + (body.acknowledged_by || "?");
      else answers[alarmId] = t("board.ack_refused") + " (" + (body.reason || body.detail || res.status) + ")";
    } catch (e) {
      answers[alarmId] = t("board.ack_failed");
    }
    for (const tile of tiles) for (const a of tile.alarms) {
      if (a.alarm_id === alarmId && answers[alarmId] === t("board.ack_yours") && !a.acknowledged_by) a.acknowledged_by = "✓";
    }
    render();
  }

  // ---- sound: Web Audio needs one tap (the browser's autoplay rule); the button says when sound is off
  let audio = null;
  function soundOn() { return audio !== null && audio.state === "running"; }
  function showSound() {
    soundBtn.classList.toggle("off", !soundOn());
    soundBtn.textContent = soundOn() ? t("board.sound_on") : t("board.sound_off");
  }
  soundBtn.addEventListener("click", async () => {
    if (!audio) audio = new AudioContext();
    await audio.resume();
    showSound();
    beep(0.15);
  });
  function beep(seconds) {
    if (!soundOn()) return;
    const osc = audio.createOscillator();
    const gain = audio.createGain();
    osc.frequency.value = 880;
    gain.gain.value = 0.3;
    osc.connect(gain).connect(audio.destination);
    osc.start();
    osc.stop(audio.currentTime + seconds);
  }
  function alarmWaiting() {
    return tiles.some((tile) => tile.status === "alarm" && tile.alarms.some((a) => !a.acknowledged_by && !a.maintenance));
  }
  function updateSound() { showSound(); board.classList.toggle("alarming", alarmWaiting()); }
  // Repeats as a nurse call does: three tones every two seconds while any alarm waits.
  setInterval(() => {
    showSound();
    if (alarmWaiting()) { beep(0.2); setTimeout(() => beep(0.2), 300); setTimeout(() => beep(0.2), 600); }
  }, 2000);

  showSound();
  connect();
})();
