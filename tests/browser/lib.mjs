// What the browser scripts share: running steps in Chromium and reporting
// them, collecting page errors, signing and posting Meta-shaped webhooks,
// calling the REST API, and screenshots. Used by console.mjs,
// dashboard.mjs, inbox.mjs and demo.mjs.
import { createHmac } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

export const PHONE_NUMBER_ID = '100000000000001';
export const WABA_ID = '100000000000001';

export async function launch() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
}

/// A step passed: printed as `step: …`.
export const step = (text) => console.log(`step: ${text}`);
/// What went wrong; any entry fails the run.
export const problems = [];

/// Runs `body(browser)` in a fresh Chromium, then prints every problem
/// (`FAILED: …`, exit 1) or `all steps passed` (exit 0). A thrown error is
/// a problem.
export async function inBrowser(body) {
  const browser = await launch();
  try {
    await body(browser);
  } catch (error) {
    problems.push(String(error && error.message ? error.message : error));
  } finally {
    await browser.close();
  }
  if (problems.length) {
    for (const problem of problems) console.log(`FAILED: ${problem}`);
    process.exit(1);
  }
  console.log('all steps passed');
}

/// Records the page's console errors and uncaught exceptions in `problems`.
export function watch(page, name, problems) {
  page.on('console', (m) => { if (m.type() === 'error') problems.push(`${name} console error: ${m.text()}`); });
  page.on('pageerror', (e) => problems.push(`${name} page error: ${e.message}`));
}

/// A customer's text message as Meta's webhook carries it; `referral` (e.g.
/// {source_type: 'ad', source_id, ctwa_clid, headline}) makes it an ad lead.
export function textWebhook(from, wamid, text, { name = 'Customer', referral = null } = {}) {
  const message = { from, id: wamid, timestamp: String(Math.floor(Date.now() / 1000)), type: 'text', text: { body: text } };
  if (referral) message.referral = referral;
  return {
    object: 'whatsapp_business_account',
    entry: [{ id: WABA_ID, changes: [{ field: 'messages', value: {
      messaging_product: 'whatsapp',
      metadata: { display_phone_number: '15550000000', phone_number_id: PHONE_NUMBER_ID },
      contacts: [{ profile: { name }, wa_id: from }],
      messages: [message],
    } }] }],
  };
}

/// Posts a webhook signed with the app secret, as Meta does; throws unless 200.
export async function postWebhook(baseUrl, appSecret, payload) {
  const body = Buffer.from(typeof payload === 'string' ? payload : JSON.stringify(payload));
  const signature = 'sha256=' + createHmac('sha256', appSecret).update(body).digest('hex');
  const posted = await fetch(`${baseUrl}/webhooks/whatsapp`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'x-hub-signature-256': signature },
    body,
  });
  if (posted.status !== 200) throw new Error(`the webhook was answered ${posted.status}`);
}

/// Calls the REST API with a Bearer token; returns the parsed JSON (or text
/// for CSV); throws with the server's message on an error status.
export async function api(baseUrl, token, method, path, body) {
  const response = await fetch(`${baseUrl}${path}`, {
    method,
    headers: { authorization: `Bearer ${token}`, ...(body ? { 'content-type': 'application/json' } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await response.text();
  if (!response.ok) throw new Error(`${method} ${path} answered ${response.status}: ${text}`);
  const type = response.headers.get('content-type') || '';
  return type.startsWith('application/json') ? JSON.parse(text) : text;
}

/// Polls `check` every 100 ms until it returns something truthy (returned),
/// or throws `what` after `ms`.
export async function until(what, check, ms = 10000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/// Saves a full-page screenshot as DIR/NAME.png (DIR is created); CI keeps
/// them as artifacts (target/browser-screenshots).
export async function screenshot(page, dir, name) {
  if (!dir) return;
  mkdirSync(dir, { recursive: true });
  await page.screenshot({ path: join(dir, `${name}.png`), fullPage: true });
}
