#!/usr/bin/env node
/*
 * sdc-clients-cycle.js URL USER PASSWORD
 *
 * Drives an IMGAPI server only through `require('sdc-clients').IMGAPI` (the
 * client Triton operators use through sdc-imgadm) the way an operator does:
 * create, upload, activate, list, download, update, disable/enable, ACLs,
 * icons, the `imgadm publish` import path, incremental images and the error
 * cases a client must see.  Every manifest a call returns is checked with
 * `require('imgmanifest').validateMinimalManifest` (what imgadm runs before
 * installing an image).
 *
 * Prints one `ok - ...` / `not ok - ...` line per check, then
 * `N passed, M failed`; exits non-zero if any check failed.
 *
 * Only talks to 127.0.0.1 (the URL must point there).  Each call has a
 * timeout and the whole run is bounded (see TOTAL_TIMEOUT_MS).
 */
'use strict';

var assert = require('assert');
var crypto = require('crypto');
var fs = require('fs');
var os = require('os');
var path = require('path');
var stream = require('stream');
var zlib = require('zlib');

var IMGAPI = require('sdc-clients').IMGAPI;
var imgmanifest = require('imgmanifest');

var STEP_TIMEOUT_MS = 10000;
var TOTAL_TIMEOUT_MS = 50000;

// ---- arguments

var argv = process.argv.slice(2);
if (argv.length !== 3) {
    process.stderr.write('usage: node sdc-clients-cycle.js URL USER PASSWORD\n');
    process.exit(2);
}
var URL_ = argv[0].replace(/\/+$/, '');
var USER = argv[1];
var PASSWORD = argv[2];
(function checkUrl() {
    var u = new URL(URL_);
    if (u.hostname !== '127.0.0.1') {
        process.stderr.write('refusing: URL must be on 127.0.0.1, got ' +
            u.hostname + '\n');
        process.exit(2);
    }
})();

// ---- reporting

var passed = 0;
var failed = 0;
var finished = false;

function report(good, name, detail) {
    if (finished) {
        return;
    }
    if (good) {
        passed++;
        console.log('ok - ' + name);
    } else {
        failed++;
        console.log('not ok - ' + name);
        if (detail !== undefined) {
            String(detail).split('\n').forEach(function (line) {
                console.log('#   ' + line);
            });
        }
    }
}

/* Run `fn` (returns nothing or throws an AssertionError) as one check. */
function check(name, fn) {
    try {
        fn();
        report(true, name);
        return true;
    } catch (e) {
        report(false, name, e && e.message ? e.message : String(e));
        return false;
    }
}

function summary() {
    if (finished) {
        return;
    }
    console.log(passed + ' passed, ' + failed + ' failed');
    finished = true;
}

// ---- helpers

var UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
var PUBLISHED_AT_RE = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{3})?Z$/;

function sha1(buf) {
    return crypto.createHash('sha1').update(buf).digest('hex');
}

function md5b64(buf) {
    return crypto.createHash('md5').update(buf).digest('base64');
}

function j(x) {
    if (x && typeof (x) === 'object' && typeof (x.statusCode) === 'number' &&
        x.headers) {
        return '<HTTP response ' + x.statusCode + '>';
    }
    try {
        return JSON.stringify(x);
    } catch (e) {
        return String(x);
    }
}

/*
 * Deterministic pseudo-random bytes (xorshift32), so the uploaded file is the
 * same on every run.
 */
function prngBytes(n, seed) {
    var buf = Buffer.alloc(n);
    var x = seed >>> 0 || 1;
    for (var i = 0; i < n; i++) {
        x ^= x << 13; x >>>= 0;
        x ^= x >>> 17;
        x ^= x << 5; x >>>= 0;
        buf[i] = x & 0xff;
    }
    return buf;
}

/* A gzip file of a few hundred KB (random data barely compresses). */
function makeImageFile(seed, rawSize) {
    var raw = Buffer.concat([
        Buffer.from('imgapi compat test image, seed ' + seed + '\n'),
        prngBytes(rawSize, seed)
    ]);
    return zlib.gzipSync(raw, {level: 6});
}

/* A valid 2x2 RGBA PNG. */
var PNG_BYTES = Buffer.from(
    'iVBORw0KGgoAAAANSUhEUgAAAAIAAAACCAYAAABytg0kAAAAFElEQVR42mP4z8Dwn6Hh' +
    '/38GGAMAS04I+brJv94AAAAASUVORK5CYII=', 'base64');

/* A paused readable stream over `buf`, in 64 KiB chunks. */
function bufferStream(buf) {
    var chunks = [];
    for (var off = 0; off < buf.length; off += 65536) {
        chunks.push(buf.subarray(off, Math.min(off + 65536, buf.length)));
    }
    var s = stream.Readable.from(chunks, {objectMode: false});
    s.pause();
    return s;
}

function withTimeout(what, promise) {
    var timer;
    var timeout = new Promise(function (_, reject) {
        timer = setTimeout(function () {
            var e = new Error(what + ': no answer within ' +
                STEP_TIMEOUT_MS + ' ms');
            e.code = 'StepTimeout';
            reject(e);
        }, STEP_TIMEOUT_MS);
    });
    return Promise.race([promise, timeout]).finally(function () {
        clearTimeout(timer);
    });
}

/*
 * Call `client[method](...args, cb)` and resolve with
 * {err, a, b, res} where (a, b) are the callback's positional results.
 * sdc-clients callbacks are (err, obj, res), (err, res) or (err, stream).
 */
/*
 * Every manifest any call returns is validated here too; the last check of
 * the run reports the total (so no call site can be forgotten).
 */
var MANIFEST_METHODS = [
    'getImage', 'createImage', 'addImageFile', 'activateImage',
    'disableImage', 'enableImage', 'updateImage', 'addImageAcl',
    'removeImageAcl', 'addImageIcon', 'deleteImageIcon', 'adminImportImage'
];
var manifestsSeen = 0;
var manifestFailures = [];

function recordManifests(method, result) {
    var list;
    if (method === 'listImages') {
        list = Array.isArray(result) ? result : [result];
    } else if (MANIFEST_METHODS.indexOf(method) !== -1) {
        list = [result];
    } else {
        return;
    }
    list.forEach(function (m) {
        manifestsSeen++;
        var errs = (m && typeof (m) === 'object' && !Array.isArray(m)) ?
            imgmanifest.validateMinimalManifest(m) : ['not an object'];
        if (errs) {
            manifestFailures.push(method + ' ' + (m && m.uuid) + ': ' +
                j(errs));
        }
    });
}

function call(client, method) {
    var args = Array.prototype.slice.call(arguments, 2);
    return withTimeout(method, new Promise(function (resolve) {
        args.push(function (err, a, b) {
            if (!err) {
                recordManifests(method, a);
            }
            resolve({err: err || null, a: a, b: b});
        });
        try {
            client[method].apply(client, args);
        } catch (e) {
            resolve({err: e, a: undefined, b: undefined});
        }
    })).catch(function (e) {
        return {err: e, a: undefined, b: undefined};
    });
}

function errStatus(err) {
    if (!err) {
        return undefined;
    }
    return err.statusCode;
}

function errCode(err) {
    if (!err) {
        return undefined;
    }
    if (err.body && err.body.code) {
        return err.body.code;
    }
    return err.restCode || err.code;
}

function describeErr(err) {
    if (!err) {
        return 'no error';
    }
    return 'HTTP ' + errStatus(err) + ' code=' + errCode(err) +
        ' message=' + j((err.body && err.body.message) || err.message);
}

function assertNoErr(r) {
    if (r.err) {
        throw new Error('request failed: ' + describeErr(r.err));
    }
}

function assertErr(r, status, code) {
    if (!r.err) {
        assert.fail('expected HTTP ' + status + ' ' + (code || '') +
            ', but the call succeeded: ' + j(r.a));
    }
    assert.strictEqual(errStatus(r.err), status,
        'status: expected ' + status + ', got ' + describeErr(r.err));
    if (code) {
        assert.strictEqual(errCode(r.err), code,
            'code: expected ' + code + ', got ' + describeErr(r.err));
    }
}

/* The validateMinimalManifest check for each manifest a call returned. */
function checkManifest(what, manifest) {
    return check(what + ': manifest passes validateMinimalManifest',
        function () {
            assert.ok(manifest && typeof (manifest) === 'object' &&
                !Array.isArray(manifest), 'not a JSON object: ' + j(manifest));
            var errs = imgmanifest.validateMinimalManifest(manifest);
            assert.ok(!errs, 'errors: ' + j(errs) + '\nmanifest: ' +
                j(manifest));
        });
}

function checkManifestList(what, list) {
    return check(what + ': every entry passes validateMinimalManifest',
        function () {
            assert.ok(Array.isArray(list), 'not an array: ' + j(list));
            list.forEach(function (m, i) {
                var errs = imgmanifest.validateMinimalManifest(m);
                assert.ok(!errs, 'entry ' + i + ' (' + (m && m.uuid) +
                    '): ' + j(errs));
            });
        });
}

function uuids(list) {
    return (list || []).map(function (m) { return m.uuid; });
}

function sameSet(actual, expected) {
    return actual.length === expected.length &&
        expected.every(function (u) { return actual.indexOf(u) !== -1; });
}

function readStream(s) {
    return withTimeout('reading the file stream', new Promise(
        function (resolve, reject) {
            var chunks = [];
            s.on('data', function (c) { chunks.push(c); });
            s.on('error', reject);
            s.on('end', function () { resolve(Buffer.concat(chunks)); });
            s.resume();
        }));
}

// ---- main

var clientOpts = {
    connectTimeout: 5000,
    requestTimeout: STEP_TIMEOUT_MS,
    // No hidden retries: a failure shows up as the failing check.
    retry: false
    // The default keep-alive agent is kept, as sdc-imgadm uses it.
};

function makeClient(extra) {
    var o = {url: URL_};
    Object.keys(clientOpts).forEach(function (k) { o[k] = clientOpts[k]; });
    Object.keys(extra || {}).forEach(function (k) { o[k] = extra[k]; });
    return new IMGAPI(o);
}

var admin = makeClient({user: USER, password: PASSWORD});
var anon = makeClient({});
var badpw = makeClient({user: USER, password: PASSWORD + '-wrong'});

var tmpdir = fs.mkdtempSync(path.join(os.tmpdir(), 'imgapi-compat-'));
// Unique names per run, so a server with other images gives the same result.
var TAG = 'compat-' + crypto.randomBytes(4).toString('hex');
var OWNER = '930896af-bf8c-48d4-885c-6573a94b1853';
var ACL_A = 'a6a6a6a6-0000-4000-8000-00000000000a';
var ACL_B = 'b7b7b7b7-0000-4000-8000-00000000000b';
var created = [];   // every image uuid this run created (for cleanup)

function baseManifest(name, extra) {
    var m = {
        owner: OWNER,
        name: name,
        version: '1.0.0',
        description: 'imgapi compat check image',
        type: 'zone-dataset',
        os: 'smartos',
        public: true,
        requirements: {
            networks: [ {name: 'net0', description: 'public'} ]
        },
        tags: {role: 'compat'}
    };
    Object.keys(extra || {}).forEach(function (k) { m[k] = extra[k]; });
    return m;
}

/* create + upload + activate, used for the listing set; returns manifest. */
async function makeActiveImage(label, manifest, fileBuf) {
    var r = await call(admin, 'createImage', manifest);
    var ok = check(label + ': createImage', function () {
        assertNoErr(r);
        assert.ok(UUID_RE.test(r.a.uuid), 'uuid ' + j(r.a.uuid));
    });
    if (!ok) {
        return null;
    }
    created.push(r.a.uuid);
    checkManifest(label + ': createImage', r.a);
    var uuid = r.a.uuid;
    r = await call(admin, 'addImageFile', {
        uuid: uuid, file: bufferStream(fileBuf), size: fileBuf.length,
        sha1: sha1(fileBuf), compression: 'gzip'
    });
    check(label + ': addImageFile', function () { assertNoErr(r); });
    checkManifest(label + ': addImageFile', r.a);
    r = await call(admin, 'activateImage', uuid);
    check(label + ': activateImage -> state active', function () {
        assertNoErr(r);
        assert.strictEqual(r.a.state, 'active');
    });
    checkManifest(label + ': activateImage', r.a);
    return r.a || null;
}

async function main() {
    var r, img;
    console.log('# ' + URL_ + ', run tag ' + TAG);

    // -- ping
    r = await call(admin, 'ping');
    check('ping (Basic auth): 200 {ping:"pong", imgapi:true} as JSON',
        function () {
            assertNoErr(r);
            assert.strictEqual(r.b.statusCode, 200);
            assert.strictEqual(r.a.ping, 'pong', j(r.a));
            assert.strictEqual(r.a.imgapi, true, j(r.a));
            assert.ok(/^application\/json/.test(r.b.headers['content-type']),
                'content-type ' + r.b.headers['content-type']);
        });
    r = await call(anon, 'ping');
    check('ping (anonymous): imgapi:true', function () {
        assertNoErr(r);
        assert.strictEqual(r.a.imgapi, true, j(r.a));
    });

    // -- createImage
    var fileBuf = makeImageFile(1, 300 * 1024);
    var fileSha1 = sha1(fileBuf);
    var createData = baseManifest(TAG + '-base');
    r = await call(admin, 'createImage', createData);
    var base = null;
    check('createImage: 200, unactivated manifest with a new uuid',
        function () {
            assertNoErr(r);
            img = r.a;
            assert.ok(UUID_RE.test(img.uuid), 'uuid ' + j(img.uuid));
            assert.strictEqual(img.v, 2, 'v');
            assert.strictEqual(img.state, 'unactivated', 'state');
            assert.strictEqual(img.disabled, false, 'disabled');
            assert.strictEqual(img.name, createData.name, 'name');
            assert.strictEqual(img.version, '1.0.0', 'version');
            assert.strictEqual(img.type, 'zone-dataset', 'type');
            assert.strictEqual(img.os, 'smartos', 'os');
            assert.strictEqual(img.owner, OWNER, 'owner');
            assert.strictEqual(img.public, true, 'public');
            assert.deepStrictEqual(img.requirements, createData.requirements,
                'requirements');
            assert.deepStrictEqual(img.tags, createData.tags, 'tags');
            assert.deepStrictEqual(img.files, [], 'files');
            assert.ok(!('published_at' in img), 'published_at set before ' +
                'activation: ' + img.published_at);
            base = img;
        });
    checkManifest('createImage', r.a);
    if (!base) {
        throw new Error('createImage failed; cannot continue the cycle');
    }
    created.push(base.uuid);

    // -- addImageFile (stream, sha1, compression, Content-Length)
    r = await call(admin, 'addImageFile', {
        uuid: base.uuid, file: bufferStream(fileBuf), size: fileBuf.length,
        sha1: fileSha1, compression: 'gzip'
    });
    var withFile = null;
    check('addImageFile (' + fileBuf.length + ' bytes gzip from a stream, ' +
        'sha1, Content-Length): files[0] as uploaded', function () {
        assertNoErr(r);
        assert.strictEqual(r.b.statusCode, 200);
        assert.ok(Array.isArray(r.a.files) && r.a.files.length === 1,
            'files ' + j(r.a.files));
        assert.strictEqual(r.a.files[0].sha1, fileSha1, 'files[0].sha1');
        assert.strictEqual(r.a.files[0].size, fileBuf.length,
            'files[0].size (must be a number)');
        assert.strictEqual(r.a.files[0].compression, 'gzip',
            'files[0].compression');
        assert.strictEqual(r.a.state, 'unactivated', 'state');
        withFile = r.a;
    });
    checkManifest('addImageFile', r.a);

    // -- getImage
    r = await call(admin, 'getImage', base.uuid);
    check('getImage (Basic auth): same manifest as addImageFile returned',
        function () {
            assertNoErr(r);
            assert.deepStrictEqual(r.a, withFile);
        });
    checkManifest('getImage', r.a);
    r = await call(anon, 'getImage', base.uuid);
    check('getImage (anonymous) of the unactivated image: 200 with files',
        function () {
            assertNoErr(r);
            assert.strictEqual(r.a.uuid, base.uuid);
            assert.strictEqual(r.a.files[0].sha1, fileSha1);
        });
    checkManifest('getImage (anonymous)', r.a);

    // -- activateImage
    r = await call(admin, 'activateImage', base.uuid);
    check('activateImage: state active, published_at set', function () {
        assertNoErr(r);
        assert.strictEqual(r.a.state, 'active', 'state');
        assert.strictEqual(r.a.disabled, false, 'disabled');
        assert.ok(PUBLISHED_AT_RE.test(r.a.published_at || ''),
            'published_at ' + j(r.a.published_at));
        assert.deepStrictEqual(r.a.files, withFile.files, 'files');
        base = r.a;
    });
    checkManifest('activateImage', r.a);
    r = await call(admin, 'activateImage', base.uuid);
    check('activateImage again: 422 ImageAlreadyActivated', function () {
        assertErr(r, 422, 'ImageAlreadyActivated');
    });
    r = await call(admin, 'addImageFile', {
        uuid: base.uuid, file: bufferStream(fileBuf), size: fileBuf.length,
        sha1: fileSha1, compression: 'gzip'
    });
    check('addImageFile on an activated image: 422 ImageFilesImmutable',
        function () {
            assertErr(r, 422, 'ImageFilesImmutable');
        });
    r = await call(anon, 'getImage', base.uuid);
    check('getImage after activation: active with the same published_at',
        function () {
            assertNoErr(r);
            assert.strictEqual(r.a.state, 'active');
            assert.strictEqual(r.a.published_at, base.published_at);
        });

    // -- listing set: 5 images of one name, 3 smartos zone-dataset and
    //    2 linux lx-dataset, plus one unactivated image.
    var pageName = TAG + '-page';
    var pageSet = [];
    var linuxSet = [];
    var smallFile = makeImageFile(7, 2048);
    for (var i = 0; i < 5; i++) {
        var linux = (i % 2 === 1);
        var m = baseManifest(pageName, {
            version: '1.0.' + i,
            os: linux ? 'linux' : 'smartos',
            type: linux ? 'lx-dataset' : 'zone-dataset'
        });
        var made = await makeActiveImage('listing image ' + (i + 1) + '/5', m,
            smallFile);
        if (made) {
            pageSet.push(made.uuid);
            if (linux) {
                linuxSet.push(made.uuid);
            }
        }
    }
    var unactName = TAG + '-unactivated';
    r = await call(admin, 'createImage', baseManifest(unactName));
    var unact = null;
    check('createImage (stays unactivated)', function () {
        assertNoErr(r);
        unact = r.a;
    });
    checkManifest('createImage (unactivated)', r.a);
    if (unact) {
        created.push(unact.uuid);
    }

    // -- listImages
    r = await call(anon, 'listImages');
    var fullList = r.a;
    check('listImages (anonymous, no filter): our active images, no ' +
        'unactivated or non-active ones', function () {
        assertNoErr(r);
        var got = uuids(r.a);
        [base.uuid].concat(pageSet).forEach(function (u) {
            assert.ok(got.indexOf(u) !== -1, 'missing ' + u);
        });
        if (unact) {
            assert.ok(got.indexOf(unact.uuid) === -1,
                'unactivated image listed');
        }
        r.a.forEach(function (m) {
            assert.strictEqual(m.state, 'active', m.uuid + ' state ' +
                m.state);
        });
    });
    checkManifestList('listImages (anonymous)', r.a);
    r = await call(admin, 'listImages');
    check('listImages (Basic auth, no filter): same images as anonymous',
        function () {
            assertNoErr(r);
            assert.deepStrictEqual(uuids(r.a), uuids(fullList));
        });
    checkManifestList('listImages (Basic auth)', r.a);

    r = await call(anon, 'listImages', {name: pageName});
    var byName = r.a;
    check('listImages name=<run tag>-page: exactly the 5 images',
        function () {
            assertNoErr(r);
            assert.ok(sameSet(uuids(r.a), pageSet),
                'got ' + j(uuids(r.a)) + ' want ' + j(pageSet));
        });
    checkManifestList('listImages name=', r.a);
    r = await call(anon, 'listImages', {name: pageName, os: 'linux'});
    check('listImages name+os=linux: the 2 linux images', function () {
        assertNoErr(r);
        assert.ok(sameSet(uuids(r.a), linuxSet), 'got ' + j(uuids(r.a)));
        r.a.forEach(function (m) { assert.strictEqual(m.os, 'linux'); });
    });
    checkManifestList('listImages os=', r.a);
    r = await call(anon, 'listImages', {name: pageName, type: 'lx-dataset'});
    check('listImages name+type=lx-dataset: the 2 lx-dataset images',
        function () {
            assertNoErr(r);
            assert.ok(sameSet(uuids(r.a), linuxSet), 'got ' + j(uuids(r.a)));
        });
    checkManifestList('listImages type=lx-dataset', r.a);
    r = await call(anon, 'listImages', {name: pageName, type: 'zone-dataset',
        os: 'smartos'});
    check('listImages name+type=zone-dataset+os=smartos: the other 3',
        function () {
            assertNoErr(r);
            var want = pageSet.filter(function (u) {
                return linuxSet.indexOf(u) === -1;
            });
            assert.ok(sameSet(uuids(r.a), want), 'got ' + j(uuids(r.a)) +
                ' want ' + j(want));
        });
    checkManifestList('listImages type=zone-dataset', r.a);
    r = await call(anon, 'listImages', {name: TAG + '-no-such-name'});
    check('listImages with a name nothing has: []', function () {
        assertNoErr(r);
        assert.deepStrictEqual(r.a, []);
    });
    if (unact) {
        r = await call(admin, 'listImages', {name: unactName, state: 'all'});
        check('listImages state=all (Basic auth): includes the unactivated ' +
            'image', function () {
            assertNoErr(r);
            assert.deepStrictEqual(uuids(r.a), [unact.uuid]);
            assert.strictEqual(r.a[0].state, 'unactivated');
        });
        checkManifestList('listImages state=all', r.a);
        r = await call(admin, 'listImages', {name: unactName});
        check('listImages (Basic auth, default state): no unactivated image',
            function () {
                assertNoErr(r);
                assert.deepStrictEqual(r.a, []);
            });
        r = await call(anon, 'listImages', {name: unactName, state: 'all'});
        check('listImages state=all (anonymous): reduced to active, so []',
            function () {
                assertNoErr(r);
                assert.deepStrictEqual(r.a, []);
            });
    }
    r = await call(admin, 'listImages', {name: pageName, state: 'all'});
    check('listImages name+state=all (Basic auth): the 5 images', function () {
        assertNoErr(r);
        assert.ok(sameSet(uuids(r.a), pageSet), 'got ' + j(uuids(r.a)));
    });

    // Paging with limit=2 and marker (as sdc-clients' own loop: the marker
    // image may come back first on the next page and is then dropped).
    var paged = [];
    var pages = 0;
    var marker;
    var pagingErr = null;
    var pageValid = true;
    for (var guard = 0; guard < 10; guard++) {
        var filters = {name: pageName, limit: 2};
        if (marker) {
            filters.marker = marker;
        }
        r = await call(anon, 'listImages', filters);
        if (r.err) {
            pagingErr = r.err;
            break;
        }
        pages++;
        if (imgmanifest.validateMinimalManifest && r.a.some(function (m) {
            return imgmanifest.validateMinimalManifest(m);
        })) {
            pageValid = false;
        }
        var page = r.a.slice();
        if (page.length > 2) {
            pagingErr = new Error('page of ' + page.length +
                ' entries with limit=2');
            break;
        }
        if (marker && page.length && page[0].uuid === marker) {
            page.shift();
        }
        if (!page.length) {
            break;
        }
        paged = paged.concat(uuids(page));
        var last = page[page.length - 1].uuid;
        if (last === marker) {
            break;
        }
        marker = last;
        if (r.a.length < 2) {
            break;
        }
    }
    check('listImages name+limit=2+marker paging: more than 2 pages give ' +
        'the 5 images once each, in unpaged order', function () {
        if (pagingErr) {
            throw new Error('paging failed: ' + (pagingErr.statusCode ?
                describeErr(pagingErr) : pagingErr.message));
        }
        assert.ok(pages >= 3, 'only ' + pages + ' pages');
        assert.deepStrictEqual(paged, uuids(byName),
            'paged ' + j(paged) + ' vs unpaged ' + j(uuids(byName)));
    });
    check('listImages paging: every entry passes validateMinimalManifest',
        function () {
            assert.ok(pageValid);
        });
    r = await call(anon, 'listImages', {name: pageName, limit: 1});
    check('listImages limit=1: one image, the first of the unpaged list',
        function () {
            assertNoErr(r);
            assert.deepStrictEqual(uuids(r.a), uuids(byName).slice(0, 1));
        });

    // -- getImageFile (to a temp file) and getImageFileStream
    var outPath = path.join(tmpdir, 'file.gz');
    r = await call(anon, 'getImageFile', base.uuid, outPath);
    check('getImageFile (anonymous, to a file; sdc-clients checks ' +
        'Content-MD5): sha1 and size match the manifest', function () {
        assertNoErr(r);
        var res = r.a;
        assert.strictEqual(res.statusCode, 200);
        var got = fs.readFileSync(outPath);
        assert.strictEqual(got.length, base.files[0].size, 'size');
        assert.strictEqual(sha1(got), base.files[0].sha1, 'sha1');
        assert.strictEqual(Number(res.headers['content-length']),
            base.files[0].size, 'Content-Length');
        assert.strictEqual(res.headers['content-md5'], md5b64(got),
            'Content-MD5');
    });
    r = await call(admin, 'getImageFile', base.uuid,
        path.join(tmpdir, 'file-auth.gz'));
    check('getImageFile (Basic auth): same bytes', function () {
        assertNoErr(r);
        assert.ok(fs.readFileSync(path.join(tmpdir, 'file-auth.gz'))
            .equals(fileBuf));
    });
    r = await call(anon, 'getImageFileStream', base.uuid);
    if (!r.err) {
        var bytes = await readStream(r.a).catch(function (e) { return e; });
        check('getImageFileStream: octet-stream, Content-Length, bytes ' +
            'equal the upload', function () {
            if (bytes instanceof Error) {
                throw bytes;
            }
            assert.strictEqual(r.a.statusCode, 200);
            assert.ok(/^application\/octet-stream/.test(
                r.a.headers['content-type']),
                'content-type ' + r.a.headers['content-type']);
            assert.strictEqual(Number(r.a.headers['content-length']),
                fileBuf.length, 'Content-Length');
            assert.ok(bytes.equals(fileBuf), 'bytes differ (sha1 ' +
                sha1(bytes) + ')');
        });
    } else {
        check('getImageFileStream', function () { assertNoErr(r); });
    }

    // -- updateImage
    var newTags = {role: 'compat', updated: true, n: 3};
    r = await call(admin, 'updateImage', base.uuid,
        {description: 'updated by the compat check', tags: newTags});
    check('updateImage (description, tags): returned manifest changed',
        function () {
            assertNoErr(r);
            assert.strictEqual(r.a.description, 'updated by the compat check');
            assert.deepStrictEqual(r.a.tags, newTags);
            assert.strictEqual(r.a.state, 'active');
            assert.strictEqual(r.a.published_at, base.published_at);
        });
    checkManifest('updateImage', r.a);
    r = await call(anon, 'getImage', base.uuid);
    check('getImage after updateImage: change persisted', function () {
        assertNoErr(r);
        assert.strictEqual(r.a.description, 'updated by the compat check');
        assert.deepStrictEqual(r.a.tags, newTags);
    });
    r = await call(anon, 'listImages', {name: TAG + '-base',
        'tag.updated': 'true'});
    check('listImages tag.updated=true: finds the updated image',
        function () {
            assertNoErr(r);
            assert.deepStrictEqual(uuids(r.a), [base.uuid]);
        });

    // -- disable / enable
    r = await call(admin, 'disableImage', base.uuid);
    check('disableImage: disabled true, state disabled', function () {
        assertNoErr(r);
        assert.strictEqual(r.a.disabled, true, 'disabled');
        assert.strictEqual(r.a.state, 'disabled', 'state');
    });
    checkManifest('disableImage', r.a);
    r = await call(anon, 'listImages', {name: TAG + '-base'});
    check('listImages (default state) hides the disabled image', function () {
        assertNoErr(r);
        assert.deepStrictEqual(r.a, []);
    });
    r = await call(admin, 'listImages', {name: TAG + '-base',
        state: 'disabled'});
    check('listImages state=disabled (Basic auth) shows it', function () {
        assertNoErr(r);
        assert.deepStrictEqual(uuids(r.a), [base.uuid]);
    });
    r = await call(anon, 'getImage', base.uuid);
    check('getImage of the disabled image still works', function () {
        assertNoErr(r);
        assert.strictEqual(r.a.state, 'disabled');
    });
    r = await call(admin, 'enableImage', base.uuid);
    check('enableImage: disabled false, state active', function () {
        assertNoErr(r);
        assert.strictEqual(r.a.disabled, false, 'disabled');
        assert.strictEqual(r.a.state, 'active', 'state');
    });
    checkManifest('enableImage', r.a);

    // -- ACL
    r = await call(admin, 'addImageAcl', base.uuid, [ACL_A, ACL_B]);
    check('addImageAcl [A, B]: acl has both', function () {
        assertNoErr(r);
        assert.ok(sameSet(r.a.acl || [], [ACL_A, ACL_B]), 'acl ' +
            j(r.a.acl));
    });
    checkManifest('addImageAcl', r.a);
    r = await call(admin, 'addImageAcl', base.uuid, [ACL_A]);
    check('addImageAcl [A] again: no duplicate', function () {
        assertNoErr(r);
        assert.ok(sameSet(r.a.acl || [], [ACL_A, ACL_B]), 'acl ' +
            j(r.a.acl));
    });
    r = await call(admin, 'removeImageAcl', base.uuid, [ACL_A]);
    check('removeImageAcl [A]: acl is [B]', function () {
        assertNoErr(r);
        assert.deepStrictEqual(r.a.acl, [ACL_B]);
    });
    checkManifest('removeImageAcl', r.a);
    r = await call(admin, 'removeImageAcl', base.uuid, [ACL_B]);
    check('removeImageAcl [B]: acl empty (omitted)', function () {
        assertNoErr(r);
        assert.ok(r.a.acl === undefined || (Array.isArray(r.a.acl) &&
            r.a.acl.length === 0), 'acl ' + j(r.a.acl));
    });
    checkManifest('removeImageAcl (last)', r.a);

    // -- icons
    r = await call(admin, 'addImageIcon', {
        uuid: base.uuid, contentType: 'image/png',
        file: bufferStream(PNG_BYTES), size: PNG_BYTES.length,
        sha1: sha1(PNG_BYTES)
    });
    check('addImageIcon (PNG, ' + PNG_BYTES.length + ' bytes): icon true',
        function () {
            assertNoErr(r);
            assert.strictEqual(r.a.icon, true, 'icon ' + j(r.a.icon));
        });
    checkManifest('addImageIcon', r.a);
    var iconPath = path.join(tmpdir, 'icon.png');
    r = await call(anon, 'getImageIcon', base.uuid, iconPath);
    check('getImageIcon (sdc-clients checks Content-MD5): same bytes, ' +
        'image/png', function () {
        assertNoErr(r);
        assert.strictEqual(r.a.statusCode, 200);
        assert.ok(fs.readFileSync(iconPath).equals(PNG_BYTES), 'bytes');
        assert.ok(/^image\/png/.test(r.a.headers['content-type']),
            'content-type ' + r.a.headers['content-type']);
    });
    r = await call(admin, 'deleteImageIcon', base.uuid);
    check('deleteImageIcon: manifest without icon', function () {
        assertNoErr(r);
        assert.ok(r.a.icon === undefined || r.a.icon === false,
            'icon ' + j(r.a.icon));
    });
    checkManifest('deleteImageIcon', r.a);
    r = await call(anon, 'getImageIcon', base.uuid,
        path.join(tmpdir, 'icon2.png'));
    check('getImageIcon after delete: 404 ResourceNotFound', function () {
        assertErr(r, 404, 'ResourceNotFound');
    });

    // -- adminImportImage: the `imgadm publish` path
    var pubFile = makeImageFile(3, 200 * 1024);
    var pubUuid = crypto.randomUUID();
    var PUBLISHED = '2023-05-06T07:08:09Z';
    var pubManifest = {
        v: 2,
        uuid: pubUuid,
        name: TAG + '-published',
        version: '2.0.0',
        description: 'as written by imgadm create',
        type: 'zone-dataset',
        os: 'smartos',
        state: 'active',
        disabled: false,
        public: true,
        published_at: PUBLISHED,
        requirements: {
            networks: [ {name: 'net0', description: 'public'} ],
            min_platform: {'7.0': '20230101T000000Z'}
        },
        files: [ {sha1: sha1(pubFile), size: pubFile.length,
            compression: 'gzip'} ]
    };
    r = await call(admin, 'adminImportImage', pubManifest);
    var imported = false;
    check('adminImportImage (full manifest with uuid, published_at, files, ' +
        'state): uuid kept, unactivated', function () {
        assertNoErr(r);
        imported = true;
        assert.strictEqual(r.a.uuid, pubUuid, 'uuid');
        assert.strictEqual(r.a.state, 'unactivated', 'state');
        assert.strictEqual(r.a.published_at, PUBLISHED, 'published_at');
        assert.strictEqual(r.a.name, pubManifest.name, 'name');
    });
    if (r.a && r.a.uuid) {
        created.push(r.a.uuid);
    } else {
        created.push(pubUuid);
    }
    checkManifest('adminImportImage', r.a);
    if (imported) {
        r = await call(admin, 'adminImportImage', pubManifest);
        check('adminImportImage of an existing uuid: 409 ' +
            'ImageUuidAlreadyExists', function () {
            assertErr(r, 409, 'ImageUuidAlreadyExists');
        });
    }
    r = await call(admin, 'addImageFile', {
        uuid: pubUuid, file: bufferStream(pubFile), size: pubFile.length,
        sha1: sha1(pubFile), compression: 'gzip'
    });
    check('addImageFile after import: files[0].sha1 and size strictly ' +
        'equal the manifest (imgadm publish checks this)', function () {
        assertNoErr(r);
        assert.strictEqual(r.a.files[0].sha1, pubManifest.files[0].sha1);
        assert.strictEqual(r.a.files[0].size, pubManifest.files[0].size);
        assert.strictEqual(r.a.files[0].compression, 'gzip');
    });
    checkManifest('addImageFile (imported image)', r.a);
    r = await call(admin, 'activateImage', pubUuid);
    check('activateImage of the imported image: active, published_at ' +
        'kept as ' + PUBLISHED, function () {
        assertNoErr(r);
        assert.strictEqual(r.a.state, 'active');
        assert.strictEqual(r.a.published_at, PUBLISHED);
    });
    checkManifest('activateImage (imported image)', r.a);
    r = await call(anon, 'getImage', pubUuid);
    check('getImage of the imported image: published_at still ' + PUBLISHED,
        function () {
            assertNoErr(r);
            assert.strictEqual(r.a.published_at, PUBLISHED);
            assert.deepStrictEqual(r.a.requirements, pubManifest.requirements);
        });
    checkManifest('getImage (imported image)', r.a);
    r = await call(anon, 'getImageFile', pubUuid,
        path.join(tmpdir, 'pub.gz'));
    check('getImageFile of the imported image: sha1 matches', function () {
        assertNoErr(r);
        assert.strictEqual(sha1(fs.readFileSync(path.join(tmpdir, 'pub.gz'))),
            pubManifest.files[0].sha1);
    });

    // -- incremental image: origin
    var childFile = makeImageFile(5, 100 * 1024);
    r = await call(admin, 'createImage', baseManifest(TAG + '-child',
        {origin: base.uuid, version: '1.0.1'}));
    var child = null;
    check('createImage with origin: origin kept', function () {
        assertNoErr(r);
        assert.strictEqual(r.a.origin, base.uuid);
        child = r.a;
    });
    checkManifest('createImage (incremental)', r.a);
    if (child) {
        created.push(child.uuid);
        r = await call(admin, 'addImageFile', {
            uuid: child.uuid, file: bufferStream(childFile),
            size: childFile.length, sha1: sha1(childFile),
            compression: 'gzip'
        });
        check('addImageFile (incremental)', function () { assertNoErr(r); });
        r = await call(admin, 'activateImage', child.uuid);
        check('activateImage (incremental): active, origin kept', function () {
            assertNoErr(r);
            assert.strictEqual(r.a.state, 'active');
            assert.strictEqual(r.a.origin, base.uuid);
        });
        checkManifest('activateImage (incremental)', r.a);
    }
    r = await call(admin, 'deleteImage', base.uuid);
    check('deleteImage of the origin: 422 ImageHasDependentImages',
        function () {
            assertErr(r, 422, 'ImageHasDependentImages');
        });
    r = await call(anon, 'getImage', base.uuid);
    check('origin still there after the refused delete', function () {
        assertNoErr(r);
        assert.strictEqual(r.a.uuid, base.uuid);
    });
    if (child) {
        r = await call(admin, 'deleteImage', child.uuid);
        check('deleteImage of the child: 204', function () {
            assertNoErr(r);
            assert.strictEqual(r.a.statusCode, 204);
        });
    }
    r = await call(admin, 'deleteImage', base.uuid);
    check('deleteImage of the origin after its child: 204', function () {
        assertNoErr(r);
        assert.strictEqual(r.a.statusCode, 204);
    });
    r = await call(anon, 'getImage', base.uuid);
    check('getImage of the deleted origin: 404 ResourceNotFound', function () {
        assertErr(r, 404, 'ResourceNotFound');
    });
    r = await call(anon, 'getImageFile', base.uuid,
        path.join(tmpdir, 'gone.gz'));
    check('getImageFile of the deleted origin: 404', function () {
        assertErr(r, 404);
    });

    // -- error cases
    var unknown = crypto.randomUUID();
    r = await call(anon, 'getImage', unknown);
    check('getImage of an unknown uuid: 404 ResourceNotFound', function () {
        assertErr(r, 404, 'ResourceNotFound');
    });
    r = await call(admin, 'getImage', unknown);
    check('getImage of an unknown uuid (Basic auth): 404 ResourceNotFound',
        function () {
            assertErr(r, 404, 'ResourceNotFound');
        });

    r = await call(admin, 'createImage', baseManifest(TAG + '-errors'));
    var errImg = null;
    check('createImage (for the error cases)', function () {
        assertNoErr(r);
        errImg = r.a;
    });
    if (errImg) {
        created.push(errImg.uuid);
        r = await call(admin, 'addImageFile', {
            uuid: errImg.uuid, file: bufferStream(smallFile),
            size: smallFile.length, sha1: sha1(Buffer.from('not the file')),
            compression: 'gzip'
        });
        check('addImageFile with a wrong sha1: 400 Download', function () {
            assertErr(r, 400, 'Download');
        });
        r = await call(admin, 'getImage', errImg.uuid);
        check('after the refused upload the image still has no file',
            function () {
                assertNoErr(r);
                assert.deepStrictEqual(r.a.files, []);
            });
        checkManifest('getImage (after refused upload)', r.a);
        r = await call(anon, 'getImageFile', errImg.uuid,
            path.join(tmpdir, 'nofile.gz'));
        check('getImageFile of an image without a file: 404 ' +
            'ResourceNotFound', function () {
            assertErr(r, 404, 'ResourceNotFound');
        });
        r = await call(admin, 'activateImage', errImg.uuid);
        check('activateImage without a file: 422 NoActivationNoFile',
            function () {
                assertErr(r, 422, 'NoActivationNoFile');
            });
        r = await call(admin, 'getImage', errImg.uuid);
        check('image still unactivated after the refused activation',
            function () {
                assertNoErr(r);
                assert.strictEqual(r.a.state, 'unactivated');
            });
        r = await call(anon, 'updateImage', errImg.uuid,
            {description: 'anonymous'});
        check('anonymous updateImage: 401', function () {
            assertErr(r, 401);
        });
        r = await call(anon, 'deleteImage', errImg.uuid);
        check('anonymous deleteImage: 401', function () {
            assertErr(r, 401);
        });
    }
    var anonName = TAG + '-anonymous';
    r = await call(anon, 'createImage', baseManifest(anonName));
    check('anonymous createImage: 401', function () {
        assertErr(r, 401);
    });
    if (!r.err && r.a && r.a.uuid) {
        created.push(r.a.uuid);
    }
    r = await call(badpw, 'createImage', baseManifest(anonName));
    check('createImage with a wrong password: 401', function () {
        assertErr(r, 401);
    });
    if (!r.err && r.a && r.a.uuid) {
        created.push(r.a.uuid);
    }
    r = await call(admin, 'listImages', {name: anonName, state: 'all'});
    check('the refused creates left no image behind', function () {
        assertNoErr(r);
        assert.deepStrictEqual(r.a, []);
    });
}

async function cleanup() {
    // Delete children before origins: reverse creation order.
    var left = [];
    for (var k = created.length - 1; k >= 0; k--) {
        var r = await call(admin, 'deleteImage', created[k]);
        if (r.err && errStatus(r.err) !== 404) {
            left.push(created[k] + ' (' + describeErr(r.err) + ')');
        }
    }
    check('cleanup: every image this run created is deleted', function () {
        assert.deepStrictEqual(left, []);
    });
    check('every manifest returned by any call (' + manifestsSeen +
        ') passes validateMinimalManifest', function () {
        assert.ok(manifestsSeen > 0, 'no manifest seen');
        assert.deepStrictEqual(manifestFailures, []);
    });
    var r2 = await call(admin, 'listImages', {name: '~' + TAG, state: 'all'});
    check('cleanup: listImages name=~<run tag> state=all is empty',
        function () {
            assertNoErr(r2);
            assert.deepStrictEqual(uuids(r2.a), []);
        });
}

function finish(code) {
    [admin, anon, badpw].forEach(function (c) {
        try { c.close(); } catch (e) { /* ignore */ }
    });
    try {
        fs.rmSync(tmpdir, {recursive: true, force: true});
    } catch (e) { /* ignore */ }
    summary();
    process.exit(code !== undefined ? code : (failed ? 1 : 0));
}

var watchdog = setTimeout(function () {
    report(false, 'whole run finished within ' + TOTAL_TIMEOUT_MS + ' ms');
    finish(1);
}, TOTAL_TIMEOUT_MS);
watchdog.unref();

main().catch(function (e) {
    report(false, 'cycle ran to the end', e && e.stack ? e.stack : e);
}).then(cleanup).catch(function (e) {
    report(false, 'cleanup', e && e.stack ? e.stack : e);
}).then(function () {
    finish();
});
