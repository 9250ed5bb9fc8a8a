// The recording page. The recorder calls window.recorderStart(cfg) once, then
// window.recorderStop(); chunks and events go back to the recorder over HTTP with the
// session's own key (never the service secret).
"use strict";

(function () {
  let s = null; // the one session of this page

  function post(path, body, contentType) {
    return fetch(`/sessions/${s.sid}/${path}`, {
      method: "POST",
      headers: { "X-Session-Key": s.key, "Content-Type": contentType },
      body,
    });
  }

  function report(type, extra) {
    if (!s) return;
    post("events", JSON.stringify(Object.assign({ type }, extra || {})), "application/json")
      .catch((e) => console.warn("event upload failed", type, e));
  }

  async function upload(seq, blob) {
    // Retries a failed upload a few times; the chain keeps later chunks waiting meanwhile.
    for (let attempt = 0; attempt < 5; attempt++) {
      try {
        const r = await post(`chunks/${seq}`, blob, "application/octet-stream");
        if (r.ok) return;
        if (r.status < 500) { console.warn("chunk refused", seq, r.status); return; }
      } catch (e) {
        console.warn("chunk upload failed", seq, e);
      }
      await new Promise((res) => setTimeout(res, 200 * 2 ** attempt));
    }
  }

  function fail(code, message) {
    return { ok: false, error: { code, message } };
  }

  async function joinAgora(cfg) {
    AgoraRTC.setLogLevel(4);
    AgoraRTC.disableLogUpload();
    const client = AgoraRTC.createClient({ mode: "live", codec: "vp8" });
    s.client = client;
    s.remote = new Map(); // uid -> {source, element}
    const users = () => report("users", { count: client.remoteUsers.length });
    client.on("user-joined", users);
    client.on("user-left", (user) => { detach(user.uid); users(); });
    client.on("user-published", async (user, mediaType) => {
      if (mediaType !== "audio") return;
      try {
        const track = await client.subscribe(user, "audio");
        if (!user.hasAudio) return; // unpublished while subscribing
        attach(user.uid, track.getMediaStreamTrack());
      } catch (e) {
        console.warn("subscribe failed", user.uid, e);
      }
    });
    client.on("user-unpublished", (user, mediaType) => { if (mediaType === "audio") detach(user.uid); });
    client.on("token-privilege-will-expire", () => report("token-will-expire"));
    client.on("token-privilege-did-expire", () => report("token-expired"));
    // The recorder decides: RECONNECTING keeps recording (silence), DISCONNECTED for any
    // reason but our own LEAVE ends the session with that reason.
    client.on("connection-state-change", (cur, prev, reason) =>
      report("connection-state", { state: cur, previous: prev, reason: reason || null }));
    await client.setClientRole("audience");

    // Offline, join() never settles (it retries gateways forever): give up after our own
    // timeout and leave, which makes join() reject with OPERATION_ABORTED.
    const joining = client.join(cfg.appId, cfg.channel, cfg.token || null, cfg.uid);
    joining.catch(() => {});
    let timer;
    const timeout = new Promise((res) => { timer = setTimeout(() => res("timeout"), cfg.joinTimeoutMs); });
    let outcome;
    try {
      outcome = await Promise.race([joining.then(() => "joined"), timeout]);
    } catch (e) {
      clearTimeout(timer);
      await client.leave().catch(() => {});
      return fail("agora_join_failed", `joining ${cfg.channel} failed: ${e && (e.code || e.message) || e}`);
    }
    clearTimeout(timer);
    if (outcome === "timeout") {
      await client.leave().catch(() => {});
      return fail("agora_join_timeout",
        `joining Agora channel ${cfg.channel} did not finish within ${cfg.joinTimeoutMs} ms`);
    }
    users();
    return null;
  }

  function attach(uid, track) {
    detach(uid);
    const stream = new MediaStream([track]);
    // Chrome feeds a remote WebRTC stream to WebAudio only while a media element plays it.
    const element = new Audio();
    element.muted = true;
    element.srcObject = stream;
    element.play().catch(() => {});
    const source = s.ctx.createMediaStreamSource(stream);
    source.connect(s.dest);
    s.remote.set(uid, { source, element });
    report("track", { uid, on: true });
  }

  function detach(uid) {
    const entry = s && s.remote && s.remote.get(uid);
    if (!entry) return;
    entry.source.disconnect();
    entry.element.srcObject = null;
    s.remote.delete(uid);
    report("track", { uid, on: false });
  }

  async function playFixture(url) {
    const element = new Audio();
    element.crossOrigin = "anonymous";
    element.src = url;
    const source = s.ctx.createMediaElementSource(element);
    source.connect(s.dest);
    element.addEventListener("ended", () => report("source-ended"));
    await element.play();
    s.element = element;
  }

  window.recorderStart = async function (cfg) {
    if (s) return fail("already_started", "this page already records a session");
    s = { sid: cfg.sid, key: cfg.key, seq: 0, chain: Promise.resolve() };
    try {
      // The mix is speech stored as 16 kHz mono: one channel to encode, and the rate and
      // buffer size the recorder chose (RECORDER_AUDIO_SAMPLE_RATE, RECORDER_AUDIO_LATENCY).
      const options = { latencyHint: cfg.latencyHint || "interactive" };
      if (cfg.sampleRate) options.sampleRate = cfg.sampleRate;
      s.ctx = new AudioContext(options);
      await s.ctx.resume();
      s.dest = s.ctx.createMediaStreamDestination();
      s.dest.channelCount = 1;
      s.dest.channelCountMode = "explicit";
      s.dest.channelInterpretation = "speakers";
      // A silent source keeps the recording's clock running while nobody is heard (no
      // remote track yet, everyone left, reconnecting): without it Chrome records no
      // frames then and the WebM's timeline skips the silence.
      s.silence = s.ctx.createConstantSource();
      s.silence.offset.value = 0;
      s.silence.connect(s.dest);
      s.silence.start();
      if (cfg.source === "agora") {
        const failed = await joinAgora(cfg);
        if (failed) return failed;
      } else if (cfg.source.startsWith("tone:")) {
        const osc = s.ctx.createOscillator();
        osc.frequency.value = parseFloat(cfg.source.slice(5));
        const gain = s.ctx.createGain();
        gain.gain.value = 0.3;
        osc.connect(gain).connect(s.dest);
        osc.start();
        s.osc = osc;
      } else {
        await playFixture(cfg.source);
      }
      const rec = new MediaRecorder(s.dest.stream, {
        mimeType: "audio/webm;codecs=opus",
        audioBitsPerSecond: cfg.audioBitsPerSecond,
      });
      rec.ondataavailable = (event) => {
        if (!event.data || !event.data.size) return;
        const seq = s.seq++;
        s.chain = s.chain.then(() => upload(seq, event.data));
      };
      rec.onerror = (event) => report("recorder-error", { message: String(event.error || event) });
      s.rec = rec;
      rec.start(cfg.timesliceMs);
      s.startedAt = performance.now();
      return { ok: true, mimeType: rec.mimeType, sampleRate: s.ctx.sampleRate };
    } catch (e) {
      return fail("start_failed", String(e && e.message || e));
    }
  };

  // Resolves after MediaRecorder's onstop and after the last chunk's upload.
  window.recorderStop = async function () {
    if (!s || !s.rec) return { chunks: 0, recordedMs: 0 };
    if (s.rec.state !== "inactive") {
      await new Promise((res) => { s.rec.onstop = res; s.rec.stop(); });
    }
    const recordedMs = Math.round(performance.now() - s.startedAt);
    await s.chain;
    if (s.osc) s.osc.stop();
    if (s.element) s.element.pause();
    if (s.client) await s.client.leave().catch(() => {});
    await s.ctx.close().catch(() => {});
    return { chunks: s.seq, recordedMs };
  };

  window.recorderRenewToken = async function (token) {
    await s.client.renewToken(token);
    return true;
  };
})();
