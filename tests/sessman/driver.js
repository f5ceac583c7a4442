// Drives the sessman `Session` class (./session.js, unmodified) against a
// server. Run by tests/tests/api_sessman.rs:
//
//   node driver.js roundtrip BASE_URL USER   create, change s.data, update
//   node driver.js auth BASE_URL USER KEY    what happens with options.auth
//
// The class logs a lot; the driver's answer is the one line that starts with
// "RESULT " (JSON).
'use strict';

const fs = require('fs');
const path = require('path');

// session.js is a bare class declaration, not a module: evaluate its text and
// hand the class out.
const source = fs.readFileSync(path.join(__dirname, 'session.js'), 'utf8');
const Session = new Function(`${source}\nreturn Session;`)();

function result(value) {
    process.stdout.write(`RESULT ${JSON.stringify(value)}\n`);
}

async function roundtrip(base_url, user) {
    const s = await Session.create(user, {
        base_url,
        data: { theme: 'dark', cart: { items: 1, sku: ['a-1'] } },
    });
    // A copy: the class hands out its own object, which is changed below.
    const created = { session_id: s.session_id || null, data: JSON.parse(JSON.stringify(s.data)) };
    // Change the data as an application would, then save it.
    s.data.cart.items = 3;
    s.data.cart.sku.push('b-2');
    delete s.data.theme;
    s.data.lang = 'fi';
    await s.updateSession();
    result({ created, session_id: s.session_id || null, data: s.data });
}

async function auth(base_url, user, key) {
    try {
        const s = await Session.create(user, { base_url, auth: key, data: { a: 1 } });
        result({ ok: true, session_id: s.session_id || null });
    } catch (e) {
        result({ ok: false, error: e.name, message: e.message });
    }
}

async function main() {
    const [mode, base_url, user, key] = process.argv.slice(2);
    if (mode === 'roundtrip') {
        await roundtrip(base_url, user);
    } else if (mode === 'auth') {
        await auth(base_url, user, key);
    } else {
        throw new Error(`unknown mode ${mode}`);
    }
}

main().catch((e) => {
    console.error(e);
    process.exit(1);
});
