#!/usr/bin/env node
// Generates reference Agora RTC token vectors (agora_tokens.json) with Agora's
// official npm builders:
//   - "007" (AccessToken2): agora-token        RtcTokenBuilder.buildTokenWithUid / buildTokenWithUserAccount
//   - "006" (AccessToken):  agora-access-token RtcTokenBuilder.buildTokenWithUid / buildTokenWithAccount
// The builders are called for real (so their per-role privilege logic is what
// is recorded); only the random / clock-derived fields are pinned:
//   007: issueTs and salt are overridden just before AccessToken2.build().
//   006: salt and ts (= issue_ts + 86400) are overridden on the AccessToken the
//        builder leaves in RtcTokenBuilder.key, which is then built again.
// Every token is also rebuilt by hand (AccessToken2/ServiceRtc or AccessToken
// plus privileges per role) and parsed back; any disagreement aborts.
// Usage: npm ci && npm run vectors   (writes JSON to stdout)
'use strict'

const assert = require('assert')
const crypto = require('crypto')

const agoraToken = require('agora-token')
const AT2 = require('agora-token/src/AccessToken2')
const agoraAccessToken = require('agora-access-token')
const AT006 = require('agora-access-token/src/AccessToken')

const TOKEN_VERSION = require('agora-token/package.json').version
const ACCESS_TOKEN_VERSION = require('agora-access-token/package.json').version

// ---------------------------------------------------------------------------
// Throwaway credentials: 32 lowercase hex chars derived from a fixed seed.
const hex32 = label => crypto.createHash('sha256').update(`memharbor-agora-vectors/${label}`).digest('hex').slice(0, 32)
const APP_A = { app_id: hex32('app_id/A'), app_cert: hex32('app_cert/A') }
const APP_B = { app_id: hex32('app_id/B'), app_cert: hex32('app_cert/B') }

// Channel names: a realistic one, and a 64-byte one using every punctuation
// character Agora documents as allowed: !#$%&()+-:;<=.>?@[]^_{|}~, and space.
const CH_BASIC = 'g1_alice_bob_1700000000000'
const PUNCT = '!#$%&()+-:;<=.>?@[]^_{|}~, '
const CH_64 = ('Room ' + PUNCT + 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789').slice(0, 64)
assert.strictEqual(Buffer.byteLength(CH_64, 'utf8'), 64)
for (const c of PUNCT) assert(CH_64.includes(c), `64-byte channel lacks ${JSON.stringify(c)}`)

// A 255-byte account (Agora's documented maximum user-account length).
const ACCOUNT_255 = ('acct_' + 'abcdefghijklmnopqrstuvwxyz0123456789-_.@'.repeat(10)).slice(0, 255)
assert.strictEqual(Buffer.byteLength(ACCOUNT_255, 'utf8'), 255)

// ---------------------------------------------------------------------------
// Case templates; each is emitted once per token version ("007" and "006").
const TEMPLATES = [
    { name: 'publisher_uid_basic', ...APP_A, channel: CH_BASIC, uid: 12345, role: 'publisher', issue_ts: 1700000000, salt: 12345678, expire: 3600 },
    { name: 'subscriber_uid_basic', ...APP_A, channel: CH_BASIC, uid: 12345, role: 'subscriber', issue_ts: 1700000000, salt: 12345678, expire: 3600 },
    { name: 'publisher_account_basic', ...APP_A, channel: CH_BASIC, account: 'alice_1700000000000', role: 'publisher', issue_ts: 1700000000, salt: 12345678, expire: 3600 },
    { name: 'subscriber_account_basic', ...APP_A, channel: CH_BASIC, account: 'bob_1700000000000', role: 'subscriber', issue_ts: 1700000000, salt: 12345678, expire: 3600 },
    { name: 'publisher_uid_0', ...APP_A, channel: CH_BASIC, uid: 0, role: 'publisher', issue_ts: 1700000000, salt: 424242, expire: 3600 },
    { name: 'subscriber_uid_0', ...APP_A, channel: CH_BASIC, uid: 0, role: 'subscriber', issue_ts: 1700000000, salt: 424242, expire: 3600 },
    { name: 'publisher_uid_max_u32', ...APP_A, channel: CH_BASIC, uid: 4294967295, role: 'publisher', issue_ts: 1712345678, salt: 7654321, expire: 7200 },
    { name: 'subscriber_uid_999999', ...APP_B, channel: CH_BASIC, uid: 999999, role: 'subscriber', issue_ts: 1735689600, salt: 99999999, expire: 86400 },
    { name: 'publisher_channel64_punct_uid', ...APP_A, channel: CH_64, uid: 999999, role: 'publisher', issue_ts: 1700000000, salt: 31337, expire: 3600 },
    { name: 'subscriber_channel64_punct_account', ...APP_B, channel: CH_64, account: 'carol_1700000000000', role: 'subscriber', issue_ts: 1712345678, salt: 31337, expire: 600 },
    { name: 'publisher_account_255_bytes', ...APP_A, channel: CH_BASIC, account: ACCOUNT_255, role: 'publisher', issue_ts: 1700000000, salt: 5555, expire: 3600 },
    { name: 'subscriber_account_255_bytes', ...APP_B, channel: CH_64, account: ACCOUNT_255, role: 'subscriber', issue_ts: 1735689600, salt: 5555, expire: 86400 },
    { name: 'publisher_expire_1_salt_1', ...APP_B, channel: CH_BASIC, uid: 777, role: 'publisher', issue_ts: 1712345678, salt: 1, expire: 1 },
    { name: 'subscriber_expire_86400_salt_99999999', ...APP_A, channel: CH_BASIC, uid: 1, role: 'subscriber', issue_ts: 1699999999, salt: 99999999, expire: 86400 },
    // Same inputs as publisher_uid_basic but the user is the account "12345":
    // both builders stringify the uid, so the token equals the uid-12345 one.
    { name: 'publisher_account_numeric_string', ...APP_A, channel: CH_BASIC, account: '12345', role: 'publisher', issue_ts: 1700000000, salt: 12345678, expire: 3600 },
    // The account "0" is NOT uid 0: only the integer 0 becomes the empty uid.
    { name: 'publisher_account_zero_string', ...APP_A, channel: CH_BASIC, account: '0', role: 'publisher', issue_ts: 1700000000, salt: 424242, expire: 3600 }
]

// ---------------------------------------------------------------------------
// 007 (agora-token / AccessToken2)
const Rtc007 = agoraToken.RtcTokenBuilder
const Role007 = agoraToken.RtcRole
assert.strictEqual(Role007.PUBLISHER, 1)
assert.strictEqual(Role007.SUBSCRIBER, 2)

// Pin issueTs and salt for the next AccessToken2.build() the builder performs.
let pinned007 = null
let pinnedUses007 = 0
const originalBuild007 = AT2.AccessToken2.prototype.build
AT2.AccessToken2.prototype.build = function () {
    if (pinned007) {
        this.issueTs = pinned007.issueTs
        this.salt = pinned007.salt
        pinnedUses007 += 1
    }
    return originalBuild007.call(this)
}

function build007(c) {
    const role = c.role === 'publisher' ? Role007.PUBLISHER : Role007.SUBSCRIBER
    pinned007 = { issueTs: c.issue_ts, salt: c.salt }
    const before = pinnedUses007
    let token
    try {
        token = 'uid' in c
            ? Rtc007.buildTokenWithUid(c.app_id, c.app_cert, c.channel, c.uid, role, c.expire, c.expire)
            : Rtc007.buildTokenWithUserAccount(c.app_id, c.app_cert, c.channel, c.account, role, c.expire, c.expire)
    } finally {
        pinned007 = null
    }
    assert.strictEqual(pinnedUses007, before + 1, 'builder did not go through AccessToken2.prototype.build')
    assert(token.startsWith('007'), `bad 007 token for ${c.name}: ${token}`)

    // Independent rebuild mirroring RtcTokenBuilder2.buildTokenWithUserAccount.
    const manual = new AT2.AccessToken2(c.app_id, c.app_cert, c.issue_ts, c.expire)
    manual.salt = c.salt
    const rtc = new AT2.ServiceRtc(c.channel, 'uid' in c ? c.uid : c.account)
    rtc.add_privilege(AT2.ServiceRtc.kPrivilegeJoinChannel, c.expire)
    if (role === Role007.PUBLISHER) {
        rtc.add_privilege(AT2.ServiceRtc.kPrivilegePublishAudioStream, c.expire)
        rtc.add_privilege(AT2.ServiceRtc.kPrivilegePublishVideoStream, c.expire)
        rtc.add_privilege(AT2.ServiceRtc.kPrivilegePublishDataStream, c.expire)
    }
    manual.add_service(rtc)
    assert.strictEqual(originalBuild007.call(manual), token, `007 manual rebuild differs for ${c.name}`)

    // Parse back and verify the signature and fields.
    const parsed = new AT2.AccessToken2()
    assert(parsed.from_string(token), `007 parse failed for ${c.name}`)
    assert(parsed.verifySignature(c.app_cert), `007 signature check failed for ${c.name}`)
    assert.strictEqual(parsed.appId.toString(), c.app_id)
    assert.strictEqual(parsed.issueTs, c.issue_ts)
    assert.strictEqual(parsed.expire, c.expire)
    assert.strictEqual(parsed.salt, c.salt)
    assert.strictEqual(parsed.services.length, 1)
    const svc = parsed.services[0]
    assert.strictEqual(svc.__channel_name.toString(), c.channel)
    const expectedUid = 'uid' in c ? (c.uid === 0 ? '' : String(c.uid)) : c.account
    assert.strictEqual(svc.__uid.toString(), expectedUid)
    const privs = Object.keys(svc.__privileges).map(Number)
    assert.deepStrictEqual(privs, role === Role007.PUBLISHER ? [1, 2, 3, 4] : [1])
    for (const p of privs) assert.strictEqual(svc.__privileges[p], c.expire)
    return token
}

// ---------------------------------------------------------------------------
// 006 (agora-access-token / AccessToken)
const Rtc006 = agoraAccessToken.RtcTokenBuilder
const Role006 = agoraAccessToken.RtcRole
assert.strictEqual(Role006.PUBLISHER, 1)
assert.strictEqual(Role006.SUBSCRIBER, 2)
const Priv006 = AT006.priviledges

function build006(c) {
    const role = c.role === 'publisher' ? Role006.PUBLISHER : Role006.SUBSCRIBER
    const privilegeExpiredTs = c.issue_ts + c.expire
    const ts = c.issue_ts + 24 * 3600
    Rtc006.key = undefined
    if ('uid' in c) {
        Rtc006.buildTokenWithUid(c.app_id, c.app_cert, c.channel, c.uid, role, privilegeExpiredTs)
    } else {
        Rtc006.buildTokenWithAccount(c.app_id, c.app_cert, c.channel, c.account, role, privilegeExpiredTs)
    }
    // The builder keeps its AccessToken in RtcTokenBuilder.key; pin salt/ts and rebuild.
    const key = Rtc006.key
    assert(key && typeof key.build === 'function', '006 builder did not leave its AccessToken in RtcTokenBuilder.key')
    key.salt = c.salt
    key.ts = ts
    const token = key.build()
    assert(token.startsWith('006' + c.app_id), `bad 006 token for ${c.name}: ${token}`)

    // Independent rebuild mirroring RtcTokenBuilder.buildTokenWithAccount.
    const manual = new AT006.AccessToken(c.app_id, c.app_cert, c.channel, 'uid' in c ? c.uid : c.account)
    manual.salt = c.salt
    manual.ts = ts
    manual.addPriviledge(Priv006.kJoinChannel, privilegeExpiredTs)
    if (role === Role006.PUBLISHER) {
        manual.addPriviledge(Priv006.kPublishAudioStream, privilegeExpiredTs)
        manual.addPriviledge(Priv006.kPublishVideoStream, privilegeExpiredTs)
        manual.addPriviledge(Priv006.kPublishDataStream, privilegeExpiredTs)
    }
    assert.strictEqual(manual.build(), token, `006 manual rebuild differs for ${c.name}`)

    // Parse back and check fields.
    const parsed = new AT006.AccessToken('', '', '', '')
    assert(parsed.fromString(token), `006 parse failed for ${c.name}`)
    assert.strictEqual(parsed.salt, c.salt)
    assert.strictEqual(parsed.ts, ts)
    const privs = Object.keys(parsed.messages).map(Number)
    assert.deepStrictEqual(privs, role === Role006.PUBLISHER ? [1, 2, 3, 4] : [1])
    for (const p of privs) assert.strictEqual(parsed.messages[p], privilegeExpiredTs)
    return token
}

// ---------------------------------------------------------------------------
function emit(version, t) {
    const c = { name: `v${version}_${t.name}`, version, app_id: t.app_id, app_cert: t.app_cert, channel: t.channel }
    if ('uid' in t) c.uid = t.uid
    else c.account = t.account
    c.role = t.role
    c.issue_ts = t.issue_ts
    c.salt = t.salt
    c.expire = t.expire
    c.token = version === '007' ? build007(c) : build006(c)
    return c
}

const cases = []
for (const version of ['007', '006']) {
    for (const t of TEMPLATES) cases.push(emit(version, t))
}

// Sanity: names unique; the numeric-string account equals the uid token.
assert.strictEqual(new Set(cases.map(c => c.name)).size, cases.length)
for (const v of ['007', '006']) {
    const byName = n => cases.find(c => c.name === `v${v}_${n}`).token
    assert.strictEqual(byName('publisher_account_numeric_string'), byName('publisher_uid_basic'))
    assert.notStrictEqual(byName('publisher_account_zero_string'), byName('publisher_uid_0'))
}

const out = {
    generator: { 'agora-token': TOKEN_VERSION, 'agora-access-token': ACCESS_TOKEN_VERSION, node: process.version },
    cases
}
process.stdout.write(JSON.stringify(out, null, 2) + '\n')
