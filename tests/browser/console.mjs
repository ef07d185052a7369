// Drives Switchboard's web console in a real (headless) Chromium, as an agent
// and a manager would. Run by tests/tests/console.rs, which starts the server
// and passes everything on the command line:
//   node console.mjs BASE_URL APP_SECRET WEBHOOK_JSON AGENT_TOKEN MANAGER_TOKEN REPLY
// Exits 0 when every step passed; otherwise prints what failed and exits 1.
import { createHmac } from 'node:crypto';
import { chromium } from 'playwright-core';

const [baseUrl, appSecret, webhook, agentToken, managerToken, reply] = process.argv.slice(2);
const chromiumPath = process.env.CHROMIUM || '/usr/bin/chromium';
const step = (text) => console.log(`step: ${text}`);
const problems = [];

const browser = await chromium.launch({
  executablePath: chromiumPath,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
try {
  const watch = (page, name) => {
    page.on('console', (m) => { if (m.type() === 'error') problems.push(`${name} console error: ${m.text()}`); });
    page.on('pageerror', (e) => problems.push(`${name} page error: ${e.message}`));
  };

  const agent = await browser.newPage();
  watch(agent, 'agent inbox');
  await agent.goto(`${baseUrl}/agent?token=${agentToken}`);
  await agent.getByText('Connected', { exact: true }).waitFor({ timeout: 10000 });
  step('the agent inbox connected');
  await agent.selectOption('#status-select', 'online');
  // The engine confirms the status; the inbox shows what it confirmed.
  await agent.waitForFunction(() => document.getElementById('status-select').value === 'online');
  step('the agent is online');

  const body = Buffer.from(webhook);
  const signature = 'sha256=' + createHmac('sha256', appSecret).update(body).digest('hex');
  const posted = await fetch(`${baseUrl}/webhooks/whatsapp`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'x-hub-signature-256': signature },
    body,
  });
  if (posted.status !== 200) throw new Error(`the webhook was answered ${posted.status}`);
  const customerText = JSON.parse(webhook).entry[0].changes[0].value.messages[0].text.body;

  const item = agent.locator('#conv-list li', { hasText: customerText });
  await item.waitFor({ timeout: 10000 });
  step('the customer\'s conversation appeared in the list');
  await item.click();
  await agent.locator('#msgs', { hasText: customerText }).waitFor({ timeout: 5000 });
  await agent.fill('#text', reply);
  await agent.press('#text', 'Enter');
  await agent.locator('#msgs', { hasText: reply }).waitFor({ timeout: 5000 });
  step('the reply shows in the thread');

  const dashboard = await browser.newPage();
  watch(dashboard, 'dashboard');
  await dashboard.goto(`${baseUrl}/?token=${managerToken}`);
  await dashboard.getByText('Live', { exact: true }).waitFor({ timeout: 10000 });
  // a1 holds the one conversation: its card reads "1 / <capacity>".
  await dashboard.waitForFunction(() => /\b1 \/ \d+/.test(document.body.innerText), null, { timeout: 10000 });
  step('the dashboard shows the agent holding the conversation');
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
