// Drives Switchboard's web console in a real (headless) Chromium, as an agent
// and a manager would. Run by tests/tests/console.rs, which starts the server
// and passes everything on the command line:
//   node console.mjs BASE_URL APP_SECRET WEBHOOK_JSON AGENT_TOKEN MANAGER_TOKEN REPLY
// Exits 0 when every step passed; otherwise prints what failed and exits 1.
import { inBrowser, step, problems, watch, postWebhook } from './lib.mjs';

const [baseUrl, appSecret, webhook, agentToken, managerToken, reply] = process.argv.slice(2);

await inBrowser(async (browser) => {
  const agent = await browser.newPage();
  watch(agent, 'agent inbox', problems);
  await agent.goto(`${baseUrl}/agent?token=${agentToken}`);
  await agent.getByText('Connected', { exact: true }).waitFor({ timeout: 10000 });
  step('the agent inbox connected');
  await agent.selectOption('#status-select', 'online');
  // The engine confirms the status; the inbox shows what it confirmed.
  await agent.waitForFunction(() => document.getElementById('status-select').value === 'online');
  step('the agent is online');

  await postWebhook(baseUrl, appSecret, webhook);
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
  watch(dashboard, 'dashboard', problems);
  await dashboard.goto(`${baseUrl}/?token=${managerToken}`);
  await dashboard.getByText('Live', { exact: true }).waitFor({ timeout: 10000 });
  // a1 holds the one conversation: its card reads "1 / <capacity>".
  await dashboard.waitForFunction(() => /\b1 \/ \d+/.test(document.body.innerText), null, { timeout: 10000 });
  step('the dashboard shows the agent holding the conversation');
});
