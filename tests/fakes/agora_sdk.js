// A fake Agora Web SDK 4.x (agora-rtc-sdk-ng) for the recorder's tests, loaded as the
// global `AgoraRTC` through RECORDER_AGORA_SDK_PATH. It is the subset of the real API the
// recorder page uses, with the real argument shapes and timing rules (rtc-sdk_en.d.ts):
//   - events are emitted asynchronously, never inside the call that caused them;
//   - `user-joined` fires for hosts only (this fake's remote users are all hosts), also
//     for the hosts already in the channel when the client joins;
//   - `user-published(user, "audio")` also fires for tracks already published when the
//     client joins; `user.audioTrack` exists only after `subscribe(user, "audio")`;
//   - `user-unpublished(user, "audio")` after `hasAudio` and `audioTrack` are cleared;
//   - `user-left(user, reason)` with reason "Quit" (this fake sends no user-unpublished
//     first: a page must cope with a track that ends with its user);
//   - `connection-state-change(curState, revState, reason?)`; reason only for DISCONNECTED.
// Each remote user publishes a real MediaStreamTrack: a WebAudio oscillator at `hz`.
// Tests drive the channel from Playwright through `window.__fakeAgora` (bottom).
"use strict";

(function () {
  const audio = new AudioContext();
  const hosts = new Map(); // uid -> {uid, hz, osc, track} in the channel (track: published)
  let admit;
  const fake = {
    client: null, // the page's client (the recorder makes one)
    admitted: new Promise((res) => { admit = res; }),
    joining: null, // {appId, channel, token, uid, role} once join() is called
    joinArgs: null, // the same once join() resolved
    joinedAt: null, // performance.now() when join resolved
    renewedTokens: [],
    log: [], // {t, what, ...}: everything the test did and everything emitted
  };

  function note(what, extra) {
    fake.log.push(Object.assign({ t: performance.now(), what }, extra || {}));
  }

  class AgoraRTCError extends Error {
    constructor(code, message) {
      super(`AgoraRTCError ${code}: ${message || code}`);
      this.name = "AgoraRTCException";
      this.code = code;
    }
  }

  class RemoteAudioTrack {
    constructor(uid, track) {
      this.trackMediaType = "audio";
      this.isPlaying = false;
      this._uid = uid;
      this._track = track;
    }
    getUserId() { return this._uid; }
    getTrackId() { return this._track.id; }
    getMediaStreamTrack() { return this._track; }
    play() { this.isPlaying = true; }
    stop() { this.isPlaying = false; }
    setVolume() {}
  }

  class RemoteUser {
    constructor(uid) {
      this.uid = uid;
      this.hasAudio = false;
      this.hasVideo = false;
      this.audioTrack = undefined;
      this.videoTrack = undefined;
    }
  }

  class Client {
    constructor(config) {
      this.mode = config && config.mode;
      this.codec = config && config.codec;
      this.role = "host"; // the SDK's default in live mode
      this.connectionState = "DISCONNECTED";
      this.remoteUsers = [];
      this.uid = undefined;
      this.channelName = undefined;
      this._handlers = new Map();
    }

    on(event, fn) {
      if (!this._handlers.has(event)) this._handlers.set(event, []);
      this._handlers.get(event).push(fn);
    }
    off(event, fn) {
      const list = this._handlers.get(event) || [];
      this._handlers.set(event, list.filter((f) => f !== fn));
    }
    removeAllListeners(event) {
      if (event) this._handlers.delete(event); else this._handlers.clear();
    }

    _emit(event, ...args) {
      note("emit", { event, args: args.map((a) => (a instanceof RemoteUser ? { uid: a.uid } : a)) });
      setTimeout(() => {
        for (const fn of this._handlers.get(event) || []) {
          try { fn(...args); } catch (e) { console.error("handler of", event, "threw", e); }
        }
      }, 0);
    }

    _state(next, reason) {
      const previous = this.connectionState;
      this.connectionState = next;
      if (next === "DISCONNECTED") this._emit("connection-state-change", next, previous, reason);
      else this._emit("connection-state-change", next, previous);
    }

    _remote(uid) { return this.remoteUsers.find((u) => u.uid === uid); }

    async setClientRole(role) {
      if (role !== "host" && role !== "audience") throw new AgoraRTCError("INVALID_PARAMS", `role ${role}`);
      this.role = role;
    }

    async join(appId, channel, token, uid) {
      if (this.connectionState !== "DISCONNECTED") {
        throw new AgoraRTCError("INVALID_OPERATION", `join in state ${this.connectionState}`);
      }
      if (typeof appId !== "string" || !channel) throw new AgoraRTCError("INVALID_PARAMS", "appId/channel");
      this._state("CONNECTING");
      fake.joining = { appId, channel, token, uid, role: this.role };
      // Joining takes as long as the test wants (admit()): meanwhile users may join the
      // channel and publish, and the join must report them.
      await fake.admitted;
      await new Promise((res) => setTimeout(res, 20));
      if (this.connectionState !== "CONNECTING") throw new AgoraRTCError("OPERATION_ABORTED", "cancel join");
      this.uid = uid === null || uid === undefined ? Math.floor(Math.random() * 1e9) : uid;
      this.channelName = channel;
      fake.joinArgs = { appId, channel, token, uid: this.uid, role: this.role };
      fake.joinedAt = performance.now();
      note("joined", { channel, uid: this.uid });
      this._state("CONNECTED");
      // The hosts already there, then their published tracks (the d.ts's timing rule).
      for (const host of hosts.values()) {
        const user = new RemoteUser(host.uid);
        this.remoteUsers.push(user);
        this._emit("user-joined", user);
      }
      for (const host of hosts.values()) {
        if (host.track) {
          const user = this._remote(host.uid);
          user.hasAudio = true;
          this._emit("user-published", user, "audio");
        }
      }
      return this.uid;
    }

    // As the real SDK: DISCONNECTING, then DISCONNECTED with reason LEAVE, or with no
    // reason when leave() aborts a join (which then rejects with OPERATION_ABORTED).
    async leave() {
      if (this.connectionState === "DISCONNECTED") return;
      const joined = this.connectionState !== "CONNECTING";
      this.remoteUsers = [];
      this._state("DISCONNECTING");
      this._state("DISCONNECTED", joined ? "LEAVE" : undefined);
    }

    async subscribe(user, mediaType) {
      if (this.connectionState !== "CONNECTED") throw new AgoraRTCError("INVALID_OPERATION", "not connected");
      if (mediaType !== "audio") throw new AgoraRTCError("INVALID_PARAMS", "this fake has audio only");
      const uid = user && user.uid !== undefined ? user.uid : user;
      const remote = this._remote(uid);
      const host = hosts.get(uid);
      if (!remote) throw new AgoraRTCError("INVALID_REMOTE_USER", `user ${uid} is not in the channel`);
      if (!remote.hasAudio || !host || !host.track) {
        throw new AgoraRTCError("REMOTE_USER_IS_NOT_PUBLISHED", `user ${uid} publishes no audio`);
      }
      await new Promise((res) => setTimeout(res, 10));
      remote.audioTrack = new RemoteAudioTrack(uid, host.track);
      note("subscribed", { uid });
      return remote.audioTrack;
    }

    async unsubscribe(user, mediaType) {
      const remote = this._remote(user && user.uid !== undefined ? user.uid : user);
      if (remote && (mediaType === undefined || mediaType === "audio")) remote.audioTrack = undefined;
    }

    async renewToken(token) {
      if (this.connectionState !== "CONNECTED") throw new AgoraRTCError("INVALID_OPERATION", "not joined");
      if (!token) throw new AgoraRTCError("INVALID_PARAMS", "token");
      fake.renewedTokens.push(token);
      note("renewed");
    }

    // The remote side, as the test moves it.
    _hostJoined(host) {
      if (this.connectionState !== "CONNECTED" || this._remote(host.uid)) return;
      const user = new RemoteUser(host.uid);
      this.remoteUsers.push(user);
      this._emit("user-joined", user);
    }
    _hostPublished(host) {
      const user = this._remote(host.uid);
      if (this.connectionState !== "CONNECTED" || !user) return;
      user.hasAudio = true;
      this._emit("user-published", user, "audio");
    }
    _hostUnpublished(uid) {
      const user = this._remote(uid);
      if (!user) return;
      user.hasAudio = false;
      user.audioTrack = undefined;
      this._emit("user-unpublished", user, "audio");
    }
    _hostLeft(uid) {
      const user = this._remote(uid);
      if (!user) return;
      user.hasAudio = false;
      user.audioTrack = undefined;
      this.remoteUsers = this.remoteUsers.filter((u) => u !== user);
      this._emit("user-left", user, "Quit");
    }
  }

  function stopTrack(host) {
    if (!host.track) return;
    host.osc.stop();
    host.track.stop();
    host.osc = host.track = null;
  }

  window.AgoraRTC = {
    VERSION: "4.x-fake",
    createClient(config) {
      const client = new Client(config);
      fake.client = client;
      return client;
    },
    setLogLevel() {},
    disableLogUpload() {},
    enableLogUpload() {},
    checkSystemRequirements() { return true; },
  };

  window.__fakeAgora = Object.assign(fake, {
    // Let the pending join() finish.
    admit() { note("admit"); admit(); },
    // uid joins the channel (if not in it) and publishes a `hz` tone.
    publish(uid, hz) {
      let host = hosts.get(uid);
      if (!host) {
        host = { uid, hz, osc: null, track: null };
        hosts.set(uid, host);
        if (fake.client) fake.client._hostJoined(host);
      }
      stopTrack(host);
      const osc = audio.createOscillator();
      osc.frequency.value = hz;
      const gain = audio.createGain();
      gain.gain.value = 0.3;
      const dest = audio.createMediaStreamDestination();
      osc.connect(gain).connect(dest);
      osc.start();
      Object.assign(host, { hz, osc, track: dest.stream.getAudioTracks()[0] });
      note("publish", { uid, hz });
      if (fake.client) fake.client._hostPublished(host);
      return performance.now();
    },
    unpublish(uid) {
      const host = hosts.get(uid);
      if (!host || !host.track) throw new Error(`user ${uid} publishes nothing`);
      note("unpublish", { uid });
      if (fake.client) fake.client._hostUnpublished(uid);
      stopTrack(host);
      return performance.now();
    },
    leave(uid) {
      const host = hosts.get(uid);
      if (!host) throw new Error(`user ${uid} is not in the channel`);
      note("leave", { uid });
      hosts.delete(uid);
      if (fake.client) fake.client._hostLeft(uid);
      stopTrack(host);
      return performance.now();
    },
    // Agora drops the recorder's connection (UID_BANNED, NETWORK_ERROR, ...).
    disconnect(reason) {
      note("disconnect", { reason });
      const client = fake.client;
      if (!client || client.connectionState === "DISCONNECTED") throw new Error("not connected");
      client.remoteUsers = [];
      client._state("DISCONNECTED", reason);
      return performance.now();
    },
    // The network goes away for a while (RECONNECTING: no remote audio arrives), then
    // comes back (CONNECTED).
    reconnecting() {
      note("reconnecting");
      for (const host of hosts.values()) if (host.track) host.track.enabled = false;
      fake.client._state("RECONNECTING");
      return performance.now();
    },
    reconnected() {
      note("reconnected");
      for (const host of hosts.values()) if (host.track) host.track.enabled = true;
      fake.client._state("CONNECTED");
      return performance.now();
    },
    expireSoon() {
      note("expire-soon");
      fake.client._emit("token-privilege-will-expire");
      return performance.now();
    },
    expire() {
      note("expire");
      fake.client._emit("token-privilege-did-expire");
      return performance.now();
    },
    // Seconds from the moment join resolved (the page starts recording right after it).
    sinceJoin(t) { return (t - fake.joinedAt) / 1000; },
    state() {
      const c = fake.client;
      return {
        connectionState: c ? c.connectionState : null,
        remoteUsers: c ? c.remoteUsers.map((u) => ({ uid: u.uid, hasAudio: u.hasAudio, subscribed: !!u.audioTrack })) : [],
        joining: fake.joining,
        joinArgs: fake.joinArgs,
        renewedTokens: fake.renewedTokens.slice(),
      };
    },
  });
})();
