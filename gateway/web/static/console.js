// The technician console: sensors and the gateway's health, a test alarm per crib, maintenance on and off.
"use strict";
(function () {
  const messages = JSON.parse(document.getElementById("messages").textContent);
  const t = (key) => messages[key] || key;
  const root = document.getElementById("console");
  const csrf = root.dataset.csrf;
  const rows = document.getElementById("sensor-rows");
  const health = document.getElementById("health");
  const msg = document.getElementById("console-message");

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = text;
    return e;
  }
  function ago(ts, now) {
    if (ts === null) return "–";
    const s = Math.max(0, Math.round(now - ts));
    return s < 120 ? s + " s" : Math.round(s / 60) + " min";
  }
  async function post(url, body) {
    const res = await fetch(url, {
      method: "POST", credentials: "same-origin",
      headers: { "X-CSRF-Token": csrf, "Content-Type": "application/json" },
      body: JSON.stringify(body || {}),
    });
    const answer = await res.json();
    msg.textContent = res.ok ? t("console.done") : t("console.refused_command") + ": " + (answer.detail || answer.reason || res.status);
    load();
  }
  function row(s, now) {
    const tr = el("tr", s.online === false ? "offline" : "");
    tr.dataset.crib = s.crib_id;
    tr.append(el("td", "", s.room_label + " · " + s.crib_label));
    tr.append(el("td", "", s.sensor + (s.wired ? " (" + t("console.wired") + ")" : "")));
    tr.append(el("td", "", s.online === false ? t("status.offline") : ago(s.last_seen, now)));
    tr.append(el("td", "", s.battery_pct === null ? "–" : s.battery_pct + "%"));
    tr.append(el("td", "", s.rssi_dbm === null ? "–" : s.rssi_dbm + " dBm"));
    tr.append(el("td", "", s.firmware || "–"));
    tr.append(el("td", "", String(s.refused)));
    tr.append(el("td", "", s.flaps + " / " + s.offline_periods + " / " + s.quick_resolves));
    const m = el("td");
    if (s.maintenance) {
      m.append(el("span", "", s.maintenance.reason + " → " + new Date(s.maintenance.until * 1000).toLocaleString()));
      const off = el("button", "small", t("console.maintenance_off"));
      off.addEventListener("click", () => post("/api/cribs/" + s.crib_id + "/maintenance", { on: false }));
      m.append(off);
    } else {
      const f = el("form", "maint");
      const reason = el("input"); reason.name = "reason"; reason.required = true; reason.maxLength = 200;
      reason.placeholder = t("console.reason");
      const hours = el("input"); hours.name = "hours"; hours.type = "number"; hours.min = "0.25"; hours.step = "0.25";
      hours.max = "336"; hours.value = "4"; hours.title = t("console.hours");
      const on = el("button", "small", t("console.maintenance_on")); on.type = "submit";
      f.append(reason, hours, on);
      f.addEventListener("submit", (ev) => {
        ev.preventDefault();
        post("/api/cribs/" + s.crib_id + "/maintenance", { on: true, reason: reason.value, hours: Number(hours.value) });
      });
      m.append(f);
    }
    tr.append(m);
    const a = el("td");
    const test = el("button", "small", t("console.test_alarm"));
    test.addEventListener("click", () => post("/api/cribs/" + s.crib_id + "/test-alarm"));
    a.append(test);
    tr.append(a);
    return tr;
  }
  function duration(s) {
    const d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600), m = Math.floor((s % 3600) / 60);
    return (d ? d + " d " : "") + (d || h ? h + " h " : "") + m + " min";
  }
  function showHealth(data) {
    const st = data.stats;
    const gw = data.gateway;
    const lat = gw.alert_latency_ms;
    const influx = st.influx || [];
    const items = [ // [key, label, value, bad]
      ["version", t("console.version"), gw.version, false],
      ["uptime", t("console.uptime"), duration(gw.uptime_s) + " · " + t("console.run") + " " + st.gw_run, false],
      ["broker", t("console.broker"), gw.broker ? t("console.connected") : t("console.disconnected"), !gw.broker],
      ["influx", t("console.influx"), influx.map((i) => i.name + ": " + (i.connected === false ? t("console.disconnected") : i.connected ? t("console.connected") : "–")).join(", ") || t("console.none"), influx.some((i) => i.connected === false)],
      ["outbox", t("console.outbox"),
        t("console.outbox_mqtt") + " " + gw.mqtt_outbox + " · " +
        t("console.outbox_influx") + " " + (influx.map((i) => i.name + " " + i.waiting + (i.oldest_waiting_s ? " (" + duration(i.oldest_waiting_s) + ")" : "")).join(", ") || "–") + " · " +
        t("console.outbox_store") + " " + (st.store ? st.store.pending : "–"),
        gw.mqtt_outbox > 0],
      ["rejected", t("console.rejected"), Object.entries(st.rejected).map(([k, v]) => k + ": " + v).join(", ") || "0", false],
      ["latency", t("console.latency"), lat ? t("console.latency_last") + " " + lat.last + " ms · " + t("console.latency_p50") + " " + lat.p50 + " ms · " + t("console.latency_max") + " " + lat.max + " ms (" + lat.n + ")" : "–", false],
      ["store", t("console.store"), st.store ? (st.store.size_bytes / 1e6).toFixed(1) + " MB" + (st.store.failing ? " · " + t("console.failing") : "") : "–", !!(st.store && st.store.failing)],
      ["accepted", t("console.accepted"), st.accepted, false],
      ["alarms", t("console.active_alarms"), st.active_alarms, false],
      ["errors", t("console.internal_errors"), st.internal_errors, st.internal_errors > 0],
      ["channels", t("console.channels"), Object.entries(st.channels || {}).map(([k, v]) => k + ": " + (v.state === "ok" ? "ok" : t("console.failing"))).join(", ") || "–", Object.values(st.channels || {}).some((v) => v.state !== "ok")],
      ["logins", t("console.logins_refused"), data.logins_refused, false],
    ];
    health.replaceChildren(...items.flatMap(([key, k, v, bad]) => {
      const dd = el("dd", bad ? "bad" : "", String(v));
      dd.dataset.health = key;
      return [el("dt", "", k), dd];
    }));
  }
  async function load() {
    if (document.activeElement && document.activeElement.closest && document.activeElement.closest("form.maint")) return;
    let res;
    try {
      res = await fetch("/api/console", { credentials: "same-origin" });
    } catch (e) { // the gateway is away: say so, and keep trying
      msg.textContent = t("board.connection_lost");
      root.classList.add("stale");
      return;
    }
    if (res.status === 401) { window.location.href = "/login"; return; }
    if (!res.ok) { msg.textContent = t("board.connection_lost"); return; }
    root.classList.remove("stale");
    if (msg.textContent === t("board.connection_lost")) msg.textContent = "";
    const data = await res.json();
    rows.replaceChildren(...data.sensors.map((s) => row(s, data.at)));
    showHealth(data);
  }
  load();
  setInterval(load, 5000);
})();
