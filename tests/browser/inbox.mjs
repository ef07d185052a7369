// Drives the agent inbox (GET /agent, engine/assets/agent.html) in a real
// (headless) Chromium against a fresh server on console-config.toml, as an
// agent on a phone (390×844, touch) and then on a desktop would:
//   - phone: go online, receive a customer's message, open it (the list and
//     the thread are separate views), reply, see the live countdowns and the
//     route; set a field before closing (checked through the API); try to
//     close with a required field empty (the server's refusal is shown next
//     to that field); a promise (date and amount) without its amount is
//     refused at the field; close with a number, a money field and a
//     promise (the API holds JSON numbers, not strings, and {date, amount});
//   - desktop: transfer a conversation to another team (it leaves the list;
//     the API shows it there); a conversation whose service window is closed
//     says so, and a template goes out from the template form (the API shows
//     it; the form remembers it).
//   node inbox.mjs BASE_URL APP_SECRET AGENT_TOKEN MANAGER_TOKEN [SHOT_DIR]
// The agent must be in team `sales` (a1 of console-config.toml), with
// `support` another team. Prints `step: …` lines; exits 0 after `all steps
// passed`, otherwise prints what failed and exits 1.
import { inBrowser, step, problems, watch, textWebhook, postWebhook, api, until, screenshot } from './lib.mjs';

const [baseUrl, appSecret, agentToken, managerToken, shotDir] = process.argv.slice(2);
if (!managerToken) {
  console.log('usage: node inbox.mjs BASE_URL APP_SECRET AGENT_TOKEN MANAGER_TOKEN [SHOT_DIR]');
  process.exit(2);
}
const check = (ok, what) => { if (!ok) problems.push(what); return ok; };

const run = Date.now().toString().slice(-6);   // fresh customers on every run
const PHONE_CUSTOMER = '9198100' + run;
const MOVED_CUSTOMER = '9198200' + run;
const LATE_CUSTOMER = '9198300' + run;
const PHONE_TEXT = 'Do you have 3 scooters in red?';
const MOVED_TEXT = 'My scooter makes a noise, who can help?';
const LATE_TEXT = 'Sorry for the late answer, still interested';
const REPLY = 'Yes, all three are in stock.';

/// The open conversation of a customer, through the manager's API.
async function conversationOf(waId) {
  const { conversations } = await api(baseUrl, managerToken, 'GET', `/api/v1/conversations?contact=${waId}`);
  return conversations[0] || null;
}
const getConversation = (id) => api(baseUrl, managerToken, 'GET', `/api/v1/conversations/${id}`);
/// No horizontal scrolling: the page is no wider than the viewport.
const fitsWidth = (page) => page.evaluate(() => document.documentElement.scrollWidth <= window.innerWidth + 1);
const textOf = (page, selector) => page.locator(selector).innerText();

/// Waits for the list item showing `text`; returns a locator of that
/// conversation's item that holds when its preview changes.
async function itemOf(page, text) {
  const item = page.locator('#conv-list li', { hasText: text });
  await item.waitFor({ timeout: 10000 });
  const id = await item.getAttribute('data-id');
  return page.locator(`#conv-list li[data-id="${id}"]`);
}

async function goOnline(page) {
  await page.getByText('Connected', { exact: true }).waitFor({ timeout: 10000 });
  if (await page.inputValue('#status-select') !== 'online') {
    await page.selectOption('#status-select', 'online');
    // The engine confirms the status; the inbox shows what it confirmed.
    await page.waitForFunction(() => document.getElementById('status-select').value === 'online');
  }
}

await inBrowser(async (browser) => {
  // ---------------------------------------------------------------- phone
  const phoneContext = await browser.newContext({ viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true, deviceScaleFactor: 2 });
  const phone = await phoneContext.newPage();
  watch(phone, 'phone inbox', problems);
  await phone.goto(`${baseUrl}/agent?token=${agentToken}`);
  await goOnline(phone);
  step('phone: the inbox connected and the agent is online');

  await postWebhook(baseUrl, appSecret, textWebhook(PHONE_CUSTOMER, `wamid.inbox.${run}.1`, PHONE_TEXT, { name: 'Priya' }));
  // The list item by its conversation id (its preview changes with the reply).
  const phoneItem = await itemOf(phone, PHONE_TEXT);
  check(await phone.locator('#view').isHidden(), 'phone: the thread pane shows next to the list');
  check(await fitsWidth(phone), 'phone: the list scrolls sideways');
  // The customer waits: the list's timer counts.
  await until('the waiting timer in the list', async () => /waiting \d+s/.test(await phoneItem.innerText()), 5000);
  await screenshot(phone, shotDir, 'phone-list');
  step('phone: the customer\'s conversation appeared in the list, alone on the screen, with its waiting time');

  await phoneItem.tap();
  await phone.locator('#msgs', { hasText: PHONE_TEXT }).waitFor({ timeout: 5000 });
  check(await phone.locator('aside').isHidden(), 'phone: the list stays on screen next to the thread');
  check(await phone.locator('#back-btn').isVisible(), 'phone: no back button in the thread');
  const waitBefore = await textOf(phone, '#t-wait');
  await phone.waitForTimeout(2100);
  const waitAfter = await textOf(phone, '#t-wait');
  check(/^Waiting \d+s · first response/.test(waitBefore) && waitBefore !== waitAfter,
    `phone: the waiting timer does not count (${waitBefore} → ${waitAfter})`);
  const windowText = await textOf(phone, '#t-window');
  check(/^Reply window 2[34]h \d\dm left$/.test(windowText), `phone: the service window countdown reads "${windowText}"`);
  const routeText = await textOf(phone, '#c-route');
  check(/^Routed by default/.test(routeText), `phone: the route reads "${routeText}"`);
  step(`phone: the thread shows "${windowText}", "${waitAfter}" (counting) and "${routeText}"`);

  await phone.fill('#text', REPLY);
  await phone.press('#text', 'Enter');
  await phone.locator('#msgs', { hasText: REPLY }).waitFor({ timeout: 10000 });
  const box = await phone.locator('#composer').boundingBox();
  check(box && box.y + box.height <= 844 + 1, 'phone: the composer is below the screen');
  check(await fitsWidth(phone), 'phone: the thread scrolls sideways');
  await screenshot(phone, shotDir, 'phone-thread');
  step('phone: the reply shows in the thread, the composer on screen');

  // Back to the list and in again.
  await phone.locator('#back-btn').tap();
  await phoneItem.waitFor({ state: 'visible', timeout: 5000 });
  check(await phone.locator('#view').isHidden(), 'phone: back did not leave the thread');
  await phoneItem.tap();
  await phone.locator('#msgs', { hasText: REPLY }).waitFor({ timeout: 5000 });
  step('phone: the back button returns to the list');

  const phoneConv = await conversationOf(PHONE_CUSTOMER);
  if (!phoneConv) throw new Error('the API has no conversation for the phone customer');

  // A field set before closing.
  await phone.locator('#act-fields').tap();
  await phone.locator('#f-notes').waitFor({ timeout: 5000 });
  const kinds = await phone.$$eval('#fields-box [name]', (inputs) => inputs.map((i) => `${i.name}:${i.tagName.toLowerCase()}:${i.type}`));
  check(kinds.join() === 'outcome:select:select-one,units:input:number,deal_value:input:text,callback_on:input:date,notes:input:text,promise:input:date',
    `phone: the disposition inputs are ${kinds.join()}`);
  const required = await phone.$$eval('#fields-box .field', (fields) => fields.filter((f) => f.querySelector('.req')).map((f) => f.dataset.key));
  check(required.join() === 'outcome,units', `phone: the fields marked required are ${required.join()}`);
  const options = await phone.$$eval('#f-outcome option', (os) => os.map((o) => o.value).filter(Boolean));
  check(options.join() === 'closed_won,closed_lost,follow_up', `phone: the outcome options are ${options.join()}`);
  await phone.fill('#f-notes', 'Wants delivery before Friday');
  await phone.locator('#fields-save').tap();
  await phone.locator('#fields-status', { hasText: 'Saved.' }).waitFor({ timeout: 5000 });
  const saved = await until('the note in the API', async () => {
    const c = await getConversation(phoneConv.id);
    return c.fields.notes === 'Wants delivery before Friday' ? c : null;
  }, 5000);
  check(saved.status === 'assigned', `phone: saving fields left the conversation ${saved.status}`);
  step('phone: a field set before closing is on the conversation (API)');

  // Closing with a required field empty: the server refuses, next to the field.
  await phone.selectOption('#f-outcome', 'closed_won');
  await phone.fill('#f-deal_value', '2499.50');
  await phone.fill('#f-units', '');
  await phone.locator('#fields-close').tap();
  const unitsError = phone.locator('[data-error-for="units"]');
  await until('the refusal next to units', async () => (await unitsError.innerText()).trim() !== '', 5000);
  check(/units/.test(await textOf(phone, '#fields-status')), 'phone: the form does not repeat the server\'s refusal naming units');
  check(await phone.locator('.field[data-key="outcome"] .field-error').innerText() === '', 'phone: a refusal is shown next to outcome, which is set');
  const stillOpen = await getConversation(phoneConv.id);
  check(stillOpen.status === 'assigned', `phone: a refused close left the conversation ${stillOpen.status}`);
  await screenshot(phone, shotDir, 'phone-disposition-refused');
  step(`phone: closing without units is refused, shown next to the field: "${(await unitsError.innerText()).trim()}"`);

  await phone.fill('#f-units', '3');
  check(await unitsError.innerText() === '', 'phone: the units error stays after typing a value');
  // A promise to pay: a date and an amount; a date alone is refused at the field.
  await phone.fill('#f-promise', '2026-12-24');
  await phone.locator('#fields-close').tap();
  const promiseError = phone.locator('[data-error-for="promise"]');
  await until('the promise refused without an amount', async () => /amount/.test(await promiseError.innerText()), 5000);
  await phone.fill('#f-promise-amount', '1200');
  step('phone: a promise without an amount is refused next to the field');
  await screenshot(phone, shotDir, 'phone-disposition');
  await phone.locator('#fields-close').tap();
  await phoneItem.waitFor({ state: 'detached', timeout: 10000 });
  const closed = await until('the closed conversation in the API', async () => {
    const c = await getConversation(phoneConv.id);
    return c.status === 'closed' ? c : null;
  }, 5000);
  const f = closed.fields;
  check(f.units === 3, `phone: units is ${JSON.stringify(f.units)} in the API, not the number 3`);
  check(f.deal_value === 2499.5, `phone: deal_value is ${JSON.stringify(f.deal_value)} in the API, not the number 2499.5`);
  check(f.outcome === 'closed_won', `phone: outcome is ${JSON.stringify(f.outcome)}`);
  check(f.notes === 'Wants delivery before Friday', `phone: the note set before closing is ${JSON.stringify(f.notes)}`);
  check(f.promise && f.promise.date === '2026-12-24' && f.promise.amount === 1200 && Object.keys(f.promise).length === 2,
    `phone: the promise is ${JSON.stringify(f.promise)} in the API, not {date: 2026-12-24, amount: 1200}`);
  check(!('callback_on' in f) || f.callback_on == null, `phone: an empty date was sent as ${JSON.stringify(f.callback_on)}`);
  check(await phone.locator('aside').isVisible(), 'phone: after closing the list is not shown');
  step(`phone: closed through the form; the API holds ${JSON.stringify(f)}`);
  await phoneContext.close();

  // -------------------------------------------------------------- desktop
  const deskContext = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const desk = await deskContext.newPage();
  watch(desk, 'desktop inbox', problems);
  await desk.goto(`${baseUrl}/agent?token=${agentToken}`);
  await goOnline(desk);

  await postWebhook(baseUrl, appSecret, textWebhook(MOVED_CUSTOMER, `wamid.inbox.${run}.2`, MOVED_TEXT, { name: 'Kabir' }));
  // A customer whose message is 25 hours old: the service window is closed.
  const late = textWebhook(LATE_CUSTOMER, `wamid.inbox.${run}.3`, LATE_TEXT, { name: 'Leela' });
  late.entry[0].changes[0].value.messages[0].timestamp = String(Math.floor(Date.now() / 1000) - 25 * 3600);
  await postWebhook(baseUrl, appSecret, late);
  const movedItem = await itemOf(desk, MOVED_TEXT);
  const lateItem = await itemOf(desk, LATE_TEXT);
  step('desktop: two new conversations in the list');

  await movedItem.click();
  await desk.locator('#msgs', { hasText: MOVED_TEXT }).waitFor({ timeout: 5000 });
  check(await desk.locator('aside').isVisible(), 'desktop: the list is not beside the thread');
  check(await desk.locator('#back-btn').isHidden(), 'desktop: a back button shows on the desktop');
  await desk.locator('#act-transfer').click();
  await desk.waitForFunction(() => [...document.querySelectorAll('#tr-team option')].some((o) => o.value === 'support'));
  await desk.selectOption('#tr-team', 'support');
  await desk.fill('#tr-note', 'Service question, not a sale');
  await screenshot(desk, shotDir, 'desktop-transfer');
  await desk.locator('#tr-send').click();
  await movedItem.waitFor({ state: 'detached', timeout: 10000 });
  const movedConv = await conversationOf(MOVED_CUSTOMER);
  check(movedConv && movedConv.team === 'support', `desktop: the transferred conversation is in team ${movedConv && movedConv.team}`);
  check(movedConv && movedConv.agent !== 'a1', 'desktop: the transferred conversation is still the agent\'s');
  step(`desktop: transferred to support; it left the list and the API has it in ${movedConv && movedConv.team}`);

  await lateItem.click();
  await desk.locator('#msgs', { hasText: LATE_TEXT }).waitFor({ timeout: 5000 });
  const lateWindow = await textOf(desk, '#t-window');
  check(/closed/.test(lateWindow), `desktop: a 25-hour-old message's window reads "${lateWindow}"`);
  check(await desk.locator('#window-note').isVisible(), 'desktop: no notice that only templates can be sent');
  await desk.locator('#window-template').click();
  await desk.locator('#tpl-name').waitFor({ state: 'visible', timeout: 5000 });
  check(await desk.inputValue('#tpl-lang') === 'en_US', 'desktop: the template language does not default to en_US');
  await desk.fill('#tpl-name', 'order_update');
  await desk.fill('#tpl-params', 'Leela\n3 scooters');
  await desk.locator('#tpl-send').click();
  const lateConv = await conversationOf(LATE_CUSTOMER);
  const template = await until('the template message in the API', async () => {
    const c = await getConversation(lateConv.id);
    return c.messages.find((m) => m.type === 'template' && m.media && m.media.template && m.media.template.name === 'order_update');
  }, 10000);
  check(JSON.stringify(template.media.template.params) === '["Leela","3 scooters"]',
    `desktop: the template's params are ${JSON.stringify(template.media.template.params)}`);
  check(template.media.template.language === 'en_US', `desktop: the template's language is ${template.media.template.language}`);
  await desk.locator('#msgs', { hasText: 'template order_update' }).waitFor({ timeout: 5000 });
  // The answer: accepted by Meta (the panel closes), or the page names the refusal.
  await until('the template form to settle', async () =>
    await desk.locator('#template-form').isHidden() || !/Sending/.test(await textOf(desk, '#tpl-status')), 10000);
  const outcome = await desk.locator('#template-form').isHidden() ? 'sent' : `refused: ${await textOf(desk, '#tpl-status')}`;
  step(`desktop: the template shows in the thread and the API (status ${template.status || 'none yet'}; ${outcome})`);
  if (await desk.locator('#template-form').isHidden()) await desk.locator('#act-template').click();
  await desk.locator('#tpl-name').waitFor({ state: 'visible', timeout: 5000 });
  check(await desk.inputValue('#tpl-name') === 'order_update', 'desktop: the template form does not remember the last template');
  check(await desk.inputValue('#tpl-params') === 'Leela\n3 scooters', 'desktop: the template form does not remember the last params');
  await screenshot(desk, shotDir, 'desktop');
  step('desktop: the template form remembers the last template');
  await deskContext.close();
});
