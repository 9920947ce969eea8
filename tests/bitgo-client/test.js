// An independent client of the key provider (docs/bitgo.md), as BitGo's
// Advanced Wallet Manager talks to it: superagent over mutually
// authenticated TLS, every answer checked with zod schemas written from
// BitGo's contract, and the keys, signatures and data keys used with
// BitGo's own packages (@bitgo/utxo-lib, @bitgo/sjcl, and the
// ethereumjs-util that @bitgo/sdk-core signs with).
//
// Environment: KP_URL (https://HOST:PORT of kms-api's --bitgo-listen),
// KP_CA (the CA of the provider's certificate), KP_CERT and KP_KEY (the
// client certificate and key). Exit 0 when every check passes.
'use strict';

const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const fs = require('node:fs');
const https = require('node:https');
const superagent = require('superagent');
const { z } = require('zod');
const utxolib = require('@bitgo/utxo-lib');
const sjcl = require('@bitgo/sjcl');
const ethUtil = require('ethereumjs-util');

const url = process.env.KP_URL;
const agent = new https.Agent({
  ca: fs.readFileSync(process.env.KP_CA, 'utf8'),
  cert: fs.readFileSync(process.env.KP_CERT, 'utf8'),
  key: fs.readFileSync(process.env.KP_KEY, 'utf8'),
  rejectUnauthorized: true,
});

// The contract's schemas (BitGo's keyProviderClient types).
const source = z.enum(['user', 'backup']);
const keyType = z.enum(['independent', 'tss']);
const PostKeyResponse = z.object({ pub: z.string(), coin: z.string(), source, type: keyType });
const GetKeyResponse = z.object({ pub: z.string(), prv: z.string(), source, type: keyType });
const GenerateKeyResponse = z.object({ coin: z.string(), source, type: keyType, pub: z.string() });
const SignResponse = z.object({ signature: z.string().min(1) });
const GenerateDataKeyResponse = z.object({ plaintextKey: z.string(), encryptedKey: z.string() });
const DecryptDataKeyResponse = z.object({ plaintextKey: z.string() });
const ErrorResponse = z.object({ message: z.string() });

async function call(method, path, body, query) {
  let req = method === 'get' ? superagent.get(url + path).query(query || {}) : superagent.post(url + path).send(body);
  req = req.agent(agent).timeout(30000).ok(() => true);
  const res = await req;
  assert.match(res.headers['content-type'] || '', /^application\/json/, `${method} ${path}: content type`);
  if (res.status >= 400) {
    ErrorResponse.parse(res.body);
  }
  return res;
}

function expectStatus(res, status, what) {
  assert.equal(res.status, status, `${what}: ${res.status} ${JSON.stringify(res.body)}`);
}

async function keys() {
  // An independent key made by the manager (BitGo's keychains are BIP-32
  // roots with xprv/xpub encodings).
  const node = utxolib.bip32.fromSeed(crypto.randomBytes(32));
  const prv = node.toBase58();
  const pub = node.neutered().toBase58();
  let res = await call('post', '/key', { prv, pub, coin: 'tbtc', source: 'user', type: 'independent' });
  expectStatus(res, 200, 'POST /key');
  assert.deepEqual(PostKeyResponse.parse(res.body), { pub, coin: 'tbtc', source: 'user', type: 'independent' });
  res = await call('post', '/key', { prv, pub, coin: 'tbtc', source: 'user', type: 'independent' });
  expectStatus(res, 409, 'POST /key again');
  res = await call('get', `/key/${pub}`, null, { source: 'user' });
  expectStatus(res, 200, 'GET /key');
  assert.equal(GetKeyResponse.parse(res.body).prv, prv);
  res = await call('get', `/key/${pub}`, null, { source: 'backup' });
  expectStatus(res, 404, 'GET /key under the other source');
  res = await call('get', `/key/${pub}`, null, {});
  expectStatus(res, 400, 'GET /key without source');
  // A TSS share: opaque, tens of KiB, given back byte for byte.
  const share = crypto.randomBytes(30000).toString('base64');
  const commonKeychain = crypto.randomBytes(64).toString('hex');
  res = await call('post', '/key', { prv: share, pub: commonKeychain, coin: 'tsol', source: 'backup', type: 'tss' });
  expectStatus(res, 200, 'POST /key tss');
  res = await call('get', `/key/${commonKeychain}`, null, { source: 'backup' });
  assert.equal(GetKeyResponse.parse(res.body).prv, share);
  // Malformed bodies.
  for (const bad of [{}, { prv, pub, coin: '', source: 'user', type: 'independent' }, { prv, pub, coin: 'tbtc', source: 'bitgo', type: 'independent' }]) {
    expectStatus(await call('post', '/key', bad), 400, `POST /key ${JSON.stringify(bad).slice(0, 40)}`);
  }
}

async function dataKeys() {
  let res = await call('post', '/generateDataKey', { keyType: 'AES-256' });
  expectStatus(res, 200, 'POST /generateDataKey');
  const { plaintextKey, encryptedKey } = GenerateDataKeyResponse.parse(res.body);
  // The manager encrypts its MPC state with the plaintext key as an SJCL
  // password, and decrypts it rounds later with the key given back.
  const box = sjcl.encrypt(plaintextKey, 'mpc round state', { iter: 10000, ks: 256 });
  res = await call('post', '/decryptDataKey', { encryptedKey });
  expectStatus(res, 200, 'POST /decryptDataKey');
  const back = DecryptDataKeyResponse.parse(res.body).plaintextKey;
  assert.equal(back, plaintextKey);
  assert.equal(sjcl.decrypt(back, box), 'mpc round state');
  const tampered = encryptedKey.slice(0, 10) + (encryptedKey[10] === 'A' ? 'B' : 'A') + encryptedKey.slice(11);
  expectStatus(await call('post', '/decryptDataKey', { encryptedKey: tampered }), 400, 'tampered encryptedKey');
  expectStatus(await call('post', '/generateDataKey', { keyType: 'AES-128' }), 400, 'unknown keyType');
}

async function generate(coin, src) {
  const res = await call('post', '/key/generate', { coin, source: src, type: 'independent' });
  expectStatus(res, 200, 'POST /key/generate');
  const made = GenerateKeyResponse.parse(res.body);
  assert.equal(made.coin, coin);
  assert.ok(made.pub.startsWith('xpub'), made.pub);
  return made.pub;
}

async function ethereum() {
  // External signing for an Ethereum-like coin: the operation hash,
  // signed by the xpub's own key, checked as BitGo's signer makes them.
  const pub = await generate('hteth', 'user');
  const operationHash = ethUtil.bufferToHex(crypto.randomBytes(32));
  const res = await call('post', '/sign', { pub, source: 'user', algorithm: 'ecdsa', signablePayload: operationHash });
  expectStatus(res, 200, 'POST /sign (eth)');
  const { signature } = SignResponse.parse(res.body);
  assert.match(signature, /^0x[0-9a-f]{130}$/);
  const { v, r, s } = ethUtil.fromRpcSig(signature);
  assert.ok(v === 27n || v === 28n || v === 27 || v === 28, `v = ${v}`);
  const recovered = ethUtil.ecrecover(ethUtil.toBuffer(operationHash), v, r, s);
  const node = utxolib.bip32.fromBase58(pub);
  const expected = ethUtil.importPublic(Buffer.from(node.publicKey));
  assert.equal(ethUtil.bufferToHex(ethUtil.pubToAddress(recovered)), ethUtil.bufferToHex(ethUtil.pubToAddress(expected)));
  // Low S.
  const n = BigInt('0xfffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141');
  assert.ok(BigInt('0x' + Buffer.from(s).toString('hex')) <= n / 2n, 'high S');
}

async function utxo() {
  // External signing for a UTXO coin: a 2-of-3 wallet whose user key the
  // provider made, a PSBT BitGo's library builds, the provider's half
  // signature, then BitGo's key's, finalized into a transaction.
  const network = utxolib.networks.testnet;
  const userPub = await generate('tbtc', 'user');
  const backup = utxolib.bip32.fromSeed(crypto.randomBytes(32));
  const bitgo = utxolib.bip32.fromSeed(crypto.randomBytes(32));
  const rootWalletKeys = new utxolib.bitgo.RootWalletKeys([utxolib.bip32.fromBase58(userPub), backup, bitgo]);
  for (const chain of [0, 10, 20]) { // p2sh, p2shP2wsh, p2wsh
    const psbt = utxolib.bitgo.createPsbtForNetwork({ network });
    const unspent = utxolib.testutil.mockWalletUnspent(network, BigInt(100000), { keys: rootWalletKeys, chain, index: 7, vout: 0 });
    utxolib.bitgo.addWalletUnspentToPsbt(psbt, unspent, rootWalletKeys, 'user', 'bitgo');
    utxolib.bitgo.addWalletOutputToPsbt(psbt, rootWalletKeys, chain, 8, BigInt(90000));
    const res = await call('post', '/sign', { pub: userPub, source: 'user', algorithm: 'ecdsa', signablePayload: psbt.toHex() });
    expectStatus(res, 200, `POST /sign (psbt, chain ${chain})`);
    const halfSigned = utxolib.bitgo.createPsbtFromHex(SignResponse.parse(res.body).signature, network);
    assert.ok(halfSigned.validateSignaturesOfInputHD(0, rootWalletKeys.user), `chain ${chain}: the user's signature verifies`);
    halfSigned.signAllInputsHD(bitgo);
    assert.ok(halfSigned.validateSignaturesOfAllInputs(), `chain ${chain}: all signatures verify`);
    halfSigned.finalizeAllInputs();
    const tx = halfSigned.extractTransaction();
    assert.ok(tx.ins.length === 1 && tx.outs.length === 1, `chain ${chain}: a transaction`);
  }
  // A PSBT of a wallet this key is not in.
  const stranger = new utxolib.bitgo.RootWalletKeys([backup, bitgo, utxolib.bip32.fromSeed(crypto.randomBytes(32))]);
  const psbt = utxolib.bitgo.createPsbtForNetwork({ network });
  utxolib.bitgo.addWalletUnspentToPsbt(psbt, utxolib.testutil.mockWalletUnspent(network, BigInt(100000), { keys: stranger, chain: 20, index: 1, vout: 0 }), stranger, 'user', 'bitgo');
  utxolib.bitgo.addWalletOutputToPsbt(psbt, stranger, 20, 2, BigInt(90000));
  const res = await call('post', '/sign', { pub: userPub, source: 'user', algorithm: 'ecdsa', signablePayload: psbt.toHex() });
  expectStatus(res, 400, 'POST /sign of a PSBT not naming the key');
}

(async () => {
  const res = await call('get', '/openapi.json');
  expectStatus(res, 200, 'GET /openapi.json');
  assert.equal(res.body.openapi, '3.0.3');
  for (const [name, f] of [['keys', keys], ['data keys', dataKeys], ['ethereum', ethereum], ['utxo', utxo]]) {
    await f();
    console.log(`ok: ${name}`);
  }
  console.log('bitgo client: all checks passed');
})().catch((e) => {
  console.error(e);
  process.exit(1);
});
