// Drives the edinode console in real Chromium (playwright-core), for tests/console.rs.
// Environment: BASE (admin listener URL), TOKEN, FAILED_ID (an outbound message that failed),
// DEAD_ID (the message of a dead letter), SENT_ID (a message sent with a signed MDN), SHOTS (screenshot folder), CHROMIUM (browser binary),
// PLAYWRIGHT_CORE (path of the playwright-core package). Prints one line per check; exits 1 on
// the first failed check.
const { chromium } = require(process.env.PLAYWRIGHT_CORE);
const assert = require('assert');
const fs = require('fs');
const os = require('os');
const path = require('path');

const { BASE, TOKEN, FAILED_ID, DEAD_ID, SENT_ID, SHOTS, CHROMIUM } = process.env;
const FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'];

function ok(what) { console.log(`ok: ${what}`); }

async function main() {
  fs.mkdirSync(SHOTS, { recursive: true });
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'edinode-chromium-'));
  const ctx = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM, headless: true, args: FLAGS, viewport: { width: 1366, height: 860 },
  });
  try {
    const page = ctx.pages()[0] || await ctx.newPage();
    const foreign = [];
    page.on('request', (r) => { if (!r.url().startsWith(BASE)) foreign.push(r.url()); });
    const shot = (name) => page.screenshot({ path: path.join(SHOTS, `${name}.png`), fullPage: true });

    // No session: every page sends to the login page.
    for (const p of ['/console/messages', `/console/messages/${FAILED_ID}`, '/console/dead', '/console/partners']) {
      await page.goto(BASE + p);
      assert.strictEqual(new URL(page.url()).pathname, '/console/login', `${p} without a session`);
    }
    ok('without a session every page shows the login page');
    await shot('login');

    // A wrong token: the login page again, with the reason.
    await page.fill('#token', 'not-the-token');
    const [wrong] = await Promise.all([page.waitForNavigation(), page.click('button[type=submit]')]);
    assert.strictEqual(wrong.status(), 401);
    assert.strictEqual(new URL(page.url()).pathname, '/console/login');
    assert.match(await page.textContent('p.error'), /Wrong token/);
    await page.goto(BASE + '/console/dead');
    assert.strictEqual(new URL(page.url()).pathname, '/console/login', 'a wrong token opens no session');
    ok('a wrong token gets the login page');

    await page.fill('#token', TOKEN);
    await Promise.all([page.waitForURL(BASE + '/console/messages'), page.click('button[type=submit]')]);
    const session = (await ctx.cookies(BASE + '/console/messages')).find((c) => c.name === 'edinode_console');
    assert.ok(session, 'a session cookie');
    assert.strictEqual(session.httpOnly, true);
    assert.strictEqual(session.sameSite, 'Strict');
    assert.ok(!(await page.content()).includes(TOKEN), 'the token is not in the page');
    ok('signed in: the session cookie is HttpOnly and SameSite=Strict');

    // The messages sent in the test are listed; filters narrow the list.
    const link = page.locator(`a[href="/console/messages/${FAILED_ID}"]`);
    await link.waitFor();
    await shot('messages');
    await page.selectOption('#partner', 'down');
    await Promise.all([page.waitForNavigation(), page.click('form.filters button[type=submit]')]);
    assert.ok(page.url().includes('partner=down'));
    assert.strictEqual(await page.locator('table.messages tbody tr').count(), 1, 'the filter keeps the one message to partner down');
    ok('the message sent in the test is listed, filters work');

    // Open it and resend it.
    await Promise.all([page.waitForURL(`${BASE}/console/messages/${FAILED_ID}`), page.locator(`a[href="/console/messages/${FAILED_ID}"]`).click()]);
    assert.match(await page.textContent('h1'), /failed/);
    assert.match(await page.textContent('table.history'), /queued/);
    await shot('message');
    await Promise.all([page.waitForURL(`${BASE}/console/messages/${FAILED_ID}`), page.click('text=Resend')]);
    assert.match(await page.textContent('table.history'), /resent\s*from the console/);
    ok('the message opens and resends');

    // A sent message: its MDN downloads.
    await page.goto(`${BASE}/console/messages/${SENT_ID}`);
    assert.match(await page.textContent('h1'), /sent/);
    const receipt = page.locator('ul.downloads a', { hasText: 'MDN received' });
    const mdn = await page.request.get(BASE + await receipt.getAttribute('href'));
    assert.strictEqual(mdn.status(), 200);
    assert.match(mdn.headers()['content-disposition'], /attachment/);
    assert.match((await mdn.text()).toLowerCase(), /multipart\/(signed|report)/);
    ok('the MDN of a sent message downloads');

    // The dead letter, and its replay.
    await page.goto(BASE + '/console/dead');
    const row = page.locator('table.dead tbody tr', { hasText: DEAD_ID });
    assert.strictEqual(await row.count(), 1, 'the dead letter is listed');
    assert.match(await row.textContent(), /edinode\.deliverer/);
    await shot('dead');
    await Promise.all([page.waitForURL(/\/console\/dead\?replayed=1$/), row.locator('button', { hasText: 'Replay' }).click()]);
    assert.match(await page.textContent('p.notice'), /1 dead letter\(s\) replayed/);
    assert.strictEqual(await page.locator('table.dead tbody tr', { hasText: DEAD_ID }).count(), 0);
    ok('the dead letter is listed and replayed');

    // Certificates: the one expiring within 30 days is highlighted.
    await page.goto(BASE + '/console/partners');
    const expiring = page.locator('tr.cert.expiring');
    assert.strictEqual(await expiring.count(), 1, 'one expiring certificate');
    assert.match(await expiring.textContent(), /CN=console-soon/);
    assert.match(await expiring.textContent(), /in 10 day\(s\)/);
    const bg = await expiring.locator('td').first().evaluate((td) => getComputedStyle(td).backgroundColor);
    const plain = await page.locator('tr.cert:not(.expiring) td').first().evaluate((td) => getComputedStyle(td).backgroundColor);
    assert.notStrictEqual(bg, plain, 'the expiring row is drawn differently');
    assert.match(await page.textContent('p.warn'), /1 certificate\(s\) expire within 30 days/);
    await shot('partners');
    ok('the expiring certificate is highlighted');

    await page.goto(BASE + '/console/queues');
    const mpc = page.locator('table.queues tbody tr', { hasText: 'urn:mpc:console' });
    assert.deepStrictEqual(await mpc.locator('td.num').allTextContents(), ['1', '0'], 'one pending, none leased');
    await shot('queues');
    await page.goto(BASE + '/console/summary');
    assert.match(await page.textContent('table'), /down/);
    await shot('summary');
    ok('queues and summary pages render');

    // POSTs without the CSRF token (or with a wrong one) are refused, even with the session.
    for (const form of [{ id: DEAD_ID }, { id: DEAD_ID, csrf: 'forged' }]) {
      const r = await page.request.post(BASE + '/console/dead/replay', { form, maxRedirects: 0 });
      assert.strictEqual(r.status(), 403, JSON.stringify(form));
    }
    const r = await page.request.post(`${BASE}/console/messages/${FAILED_ID}/resend`, { form: {}, maxRedirects: 0 });
    assert.strictEqual(r.status(), 403);
    ok('a POST without the CSRF token is refused');

    assert.deepStrictEqual(foreign, [], 'no request leaves the node (works offline)');
    ok('no external request');

    // Sign out: the session is gone.
    await Promise.all([page.waitForURL(BASE + '/console/login'), page.click('form.logout button')]);
    await page.goto(BASE + '/console/messages');
    assert.strictEqual(new URL(page.url()).pathname, '/console/login');
    ok('signed out');
  } finally {
    await ctx.close();
    fs.rmSync(profile, { recursive: true, force: true });
  }
}

main().then(() => console.log('all checks passed'), (e) => { console.error(`FAILED: ${e.stack || e}`); process.exit(1); });
