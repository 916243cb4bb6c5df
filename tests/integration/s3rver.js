// s3rver.js - an S3-compatible server on loopback for the integration tests:
// @20minutes/s3rver (which verifies AWS Signature V4) with one bucket and one
// access key, plus scripted failures in front of it.
//
//   node s3rver.js MODULE_DIR PORT DIRECTORY BUCKET ACCESS_KEY SECRET [SCRIPT]
//
// MODULE_DIR is where npm installed the package (.../node_modules/@20minutes/s3rver).
// SCRIPT is a comma-separated list of what to do with the next object PUTs,
// in order; each item is one of
//   store-500   store the object, then answer 500 InternalError (the client
//               must retry, and its retry lands on the same key)
//   503         answer 503 SlowDown with Retry-After: 1 without storing
//   413         answer 400 EntityTooLarge (S3's answer to an oversized PUT)
//   400         answer 400 InvalidArgument
// and, applying to every PUT rather than the next one,
//   max=N       answer 400 EntityTooLarge to a PUT of more than N bytes
// PUTs beyond the script are served normally. Prints "listening PORT" once
// ready; every request is logged to stderr as "MS METHOD URL -> STATUS ..."
// (MS: milliseconds since the epoch).
'use strict'

const path = require('node:path')

const [moduleDir, port, directory, bucket, accessKey, secret, script] = process.argv.slice(2)
if (!secret) {
  console.error('usage: node s3rver.js MODULE_DIR PORT DIRECTORY BUCKET ACCESS_KEY SECRET [SCRIPT]')
  process.exit(2)
}

const S3rver = require(moduleDir)
const AWSAccount = require(path.join(moduleDir, 'lib', 'models', 'account'))

// Only our key pair: the package's built-in S3RVER/S3RVER pair is revoked
// so that nothing passes with the default credentials by accident.
AWSAccount.DUMMY_ACCOUNT.revokeAccessKey('S3RVER')
AWSAccount.DUMMY_ACCOUNT.createKeyPair(accessKey, secret)

const steps = script ? script.split(',').filter(Boolean) : []
const maxItem = steps.find((s) => s.startsWith('max='))
const maxSize = maxItem ? Number(maxItem.slice(4)) : Infinity
if (maxItem) steps.splice(steps.indexOf(maxItem), 1)

function s3error(ctx, status, code, message) {
  ctx.status = status
  ctx.type = 'application/xml'
  ctx.body =
    '<?xml version="1.0" encoding="UTF-8"?>\n' +
    `<Error><Code>${code}</Code><Message>${message}</Message></Error>`
}

const server = new S3rver({
  address: '127.0.0.1',
  port: Number(port),
  directory,
  silent: true,
  vhostBuckets: true,
  configureBuckets: [{ name: bucket }],
})

// In front of s3rver's own middleware (Koa composes the array per request).
server.middleware.unshift(async (ctx, next) => {
  const put = ctx.method === 'PUT' && ctx.path.split('/').filter(Boolean).length > 1
  const tooLarge = put && Number(ctx.get('content-length')) > maxSize
  const step = put && !tooLarge ? steps.shift() : undefined
  const t0 = Date.now()
  if (tooLarge) {
    s3error(ctx, 400, 'EntityTooLarge', 'Your proposed upload exceeds the maximum allowed size')
  } else if (step === '503') {
    ctx.set('Retry-After', '1')
    s3error(ctx, 503, 'SlowDown', 'Please reduce your request rate.')
  } else if (step === '413') {
    s3error(ctx, 400, 'EntityTooLarge', 'Your proposed upload exceeds the maximum allowed size')
  } else if (step === '400') {
    s3error(ctx, 400, 'InvalidArgument', 'Scripted refusal')
  } else {
    try {
      await next()
    } catch (err) {
      console.error(`${Date.now()} ${ctx.method} ${ctx.url} -> ${err.status || 500} ${err.code || err.message}`)
      throw err
    }
    if (step === 'store-500' && ctx.status < 300) {
      s3error(ctx, 500, 'InternalError', 'We encountered an internal error. Please try again.')
    }
  }
  console.error(
    `${Date.now()} ${ctx.method} ${ctx.url} -> ${ctx.status}${step ? ` (scripted ${step})` : ''} ` +
      `${Date.now() - t0}ms sha256=${ctx.get('x-amz-content-sha256')}`
  )
})

server.run().then(
  (addr) => {
    process.stdout.write(`listening ${addr.port}\n`)
  },
  (err) => {
    console.error(err)
    process.exit(1)
  }
)

for (const sig of ['SIGTERM', 'SIGINT']) {
  process.on(sig, () => {
    server.close().finally(() => process.exit(0))
    setTimeout(() => process.exit(0), 2000).unref()
  })
}
