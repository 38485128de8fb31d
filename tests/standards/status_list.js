// Reads a Lapse credential's status the way any relying party would: with
// @sd-jwt/jwt-status-list, an implementation of the IETF Token Status List
// that Lapse did not write. Fetches the list the credential's
// status.status_list.uri names, checks the token's type, subject and
// Ed25519 signature against the issuer's JWKS, and prints the status.
//
//   node status_list.js CREDENTIAL JWKS_URL
const crypto = require('node:crypto');
const { getListFromStatusListJWT, getStatusListFromJWT } = require('@sd-jwt/jwt-status-list');

function part(jwt, n) {
  return JSON.parse(Buffer.from(jwt.split('.')[n], 'base64url').toString());
}

async function main() {
  const [credential, jwksUrl] = process.argv.slice(2);
  const { idx, uri } = getStatusListFromJWT(credential);
  const response = await fetch(uri);
  if (!response.ok) throw new Error(`GET ${uri}: ${response.status}`);
  const contentType = response.headers.get('content-type');
  if (contentType !== 'application/statuslist+jwt') throw new Error(`content-type ${contentType}`);
  const token = (await response.text()).trim();
  const header = part(token, 0);
  const payload = part(token, 1);
  if (header.typ !== 'statuslist+jwt') throw new Error(`typ ${header.typ}`);
  if (payload.sub !== uri) throw new Error(`sub ${payload.sub} is not ${uri}`);
  const jwks = await (await fetch(jwksUrl)).json();
  const jwk = jwks.keys.find((k) => k.kid === header.kid);
  if (!jwk) throw new Error(`kid ${header.kid} is not in the JWKS`);
  const [h, p, s] = token.split('.');
  const key = crypto.createPublicKey({ key: jwk, format: 'jwk' });
  if (!crypto.verify(null, Buffer.from(`${h}.${p}`), key, Buffer.from(s, 'base64url'))) {
    throw new Error('the status list token signature does not verify');
  }
  const list = getListFromStatusListJWT(token);
  console.log(JSON.stringify({ idx, uri, status: list.getStatus(idx), ttl: payload.ttl, bits: payload.status_list.bits }));
}

main().catch((error) => {
  console.error(error.message);
  process.exit(1);
});
