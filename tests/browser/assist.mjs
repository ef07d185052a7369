// Drives the co-pilot's agent assist (docs/copilot.md "Agent assist") in a
// real (headless) Chromium against a fresh server on console-config.toml:
//   - the agent turns its co-pilot on in the inbox (the API says so) and the
//     manager's dashboard shows it on that agent's card (`CP`);
//   - a customer asks the price: the draft shows under the conversation;
//     "Edit" puts it in the composer; asked again, "Send" sends it as is
//     (the API holds it as an outbound message);
//   - a newer customer message makes the draft go;
//   - turned off, the dashboard's card loses its mark.
//   node assist.mjs BASE_URL APP_SECRET AGENT_TOKEN MANAGER_TOKEN [SHOT_DIR]
// The agent is a1 (team `sales`). Prints `step: …` lines; exits 0 after
// `all steps passed`, otherwise prints what failed and exits 1.
import { inBrowser, step, problems, watch, textWebhook, postWebhook, api, until, screenshot } from './lib.mjs';

const [baseUrl, appSecret, agentToken, managerToken, shotDir] = process.argv.slice(2);
if (!managerToken) {
  console.log('usage: node assist.mjs BASE_URL APP_SECRET AGENT_TOKEN MANAGER_TOKEN [SHOT_DIR]');
  process.exit(2);
}
const check = (ok, what) => { if (!ok) problems.push(what); return ok; };

const run = Date.now().toString().slice(-6);
const CUSTOMER = '9198400' + run;
const DRAFT = 'Hi Priya, the red scooter is 49,999 with free delivery. Shall I book a test ride?';

await inBrowser(async (browser) => {
  const agent = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  watch(agent, 'agent inbox', problems);
  await agent.goto(`${baseUrl}/agent?token=${agentToken}`);
  await agent.getByText('Connected', { exact: true }).waitFor({ timeout: 10000 });
  await agent.selectOption('#status-select', 'online');
  await agent.waitForFunction(() => document.getElementById('status-select').value === 'online');
  await agent.locator('#copilot-toggle', { hasText: 'Co-pilot: off' }).waitFor({ timeout: 5000 });
  step('the inbox shows the co-pilot off');

  await agent.locator('#copilot-toggle').click();
  await agent.locator('#copilot-toggle[aria-pressed="true"]', { hasText: 'Co-pilot: on' }).waitFor({ timeout: 5000 });
  const me = await api(baseUrl, agentToken, 'GET', '/api/v1/agents/a1/copilot');
  check(me.copilot === true, `the API says the co-pilot is ${JSON.stringify(me)} after turning it on`);
  step('the agent turned its co-pilot on (the API agrees)');

  const dashboard = await browser.newPage();
  watch(dashboard, 'dashboard', problems);
  await dashboard.goto(`${baseUrl}/?token=${managerToken}`);
  const mark = dashboard.locator('#heatmap .cell[data-agent="a1"] [data-field="copilot"]');
  await mark.waitFor({ timeout: 10000 });
  check(await dashboard.locator('#heatmap .cell[data-agent="a2"] [data-field="copilot"]').count() === 0,
    'the dashboard marks a2, whose co-pilot is off');
  await screenshot(dashboard, shotDir, 'dashboard-copilot');
  step('the dashboard shows a1 with the co-pilot on');

  await postWebhook(baseUrl, appSecret, textWebhook(CUSTOMER, `wamid.assist.${run}.1`, 'Hello!', { name: 'Priya' }));
  const item = agent.locator('#conv-list li', { hasText: 'Hello!' });
  await item.waitFor({ timeout: 10000 });
  await item.click();
  await agent.locator('#msgs', { hasText: 'Hello!' }).waitFor({ timeout: 5000 });
  check(await agent.locator('#suggestion').isHidden(), 'a suggestion shows before any question');

  await postWebhook(baseUrl, appSecret, textWebhook(CUSTOMER, `wamid.assist.${run}.2`, 'What is the price?', { name: 'Priya' }));
  await agent.locator('#suggestion-text', { hasText: DRAFT }).waitFor({ state: 'visible', timeout: 10000 });
  await screenshot(agent, shotDir, 'inbox-suggestion');
  step('the draft shows under the conversation');

  await agent.locator('#sg-edit').click();
  check(await agent.inputValue('#text') === DRAFT, `"Edit" put "${await agent.inputValue('#text')}" in the composer`);
  check(await agent.locator('#suggestion').isHidden(), 'the suggestion stays after "Edit"');
  await agent.fill('#text', '');
  step('"Edit" puts the draft in the composer');

  await postWebhook(baseUrl, appSecret, textWebhook(CUSTOMER, `wamid.assist.${run}.3`, 'how much, again?', { name: 'Priya' }));
  await agent.locator('#suggestion-text', { hasText: DRAFT }).waitFor({ state: 'visible', timeout: 10000 });
  await agent.locator('#sg-send').click();
  await agent.locator('#msgs', { hasText: DRAFT }).waitFor({ timeout: 10000 });
  await until('the suggestion to go', async () => agent.locator('#suggestion').isHidden(), 5000);
  const { conversations } = await api(baseUrl, managerToken, 'GET', `/api/v1/conversations?contact=${CUSTOMER}`);
  const conversation = await api(baseUrl, managerToken, 'GET', `/api/v1/conversations/${conversations[0].id}`);
  const sent = conversation.messages.filter((m) => m.direction === 'out' && m.text === DRAFT);
  check(sent.length === 1, `the API holds ${sent.length} outbound copies of the draft`);
  step('"Send" sent the draft as is (the API holds it)');

  await postWebhook(baseUrl, appSecret, textWebhook(CUSTOMER, `wamid.assist.${run}.4`, 'price for two?', { name: 'Priya' }));
  await agent.locator('#suggestion-text', { hasText: DRAFT }).waitFor({ state: 'visible', timeout: 10000 });
  await postWebhook(baseUrl, appSecret, textWebhook(CUSTOMER, `wamid.assist.${run}.5`, 'never mind, thanks', { name: 'Priya' }));
  await agent.locator('#msgs', { hasText: 'never mind, thanks' }).waitFor({ timeout: 10000 });
  await agent.locator('#suggestion').waitFor({ state: 'hidden', timeout: 5000 });
  step('a newer message makes the draft go');

  await agent.locator('#copilot-toggle').click();
  await agent.locator('#copilot-toggle[aria-pressed="false"]', { hasText: 'Co-pilot: off' }).waitFor({ timeout: 5000 });
  await mark.waitFor({ state: 'detached', timeout: 10000 });
  step('turned off, the dashboard drops the mark');
});
