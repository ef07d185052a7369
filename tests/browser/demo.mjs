// The manager's first look at `switchboard demo` (tests/tests/demo.rs runs
// it against the demo binary): the console goes live, the heatmap moves as
// the simulated customers write, and the SLA, funnel and attribution panels
// open filled from the demo's past days. Screenshots of each go to SHOT_DIR.
//   node demo.mjs BASE_URL MANAGER_TOKEN SHOT_DIR
// Prints `step: …` lines; exits 0 after `all steps passed`, otherwise
// prints what failed and exits 1.
import { inBrowser, step, problems, watch, screenshot } from './lib.mjs';

const [baseUrl, managerToken, shotDir] = process.argv.slice(2);

await inBrowser(async (browser) => {
  const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  watch(page, 'dashboard', problems);
  await page.goto(`${baseUrl}/?token=${managerToken}`);
  await page.getByText('Live', { exact: true }).waitFor({ timeout: 15000 });
  step('the console is live');

  // The heatmap moves: what the agents' cells read changes.
  const loads = () => page.$$eval('#heatmap .cell', (cells) => cells.map((c) => c.textContent).join('|'));
  const first = await loads();
  await page.waitForFunction((before) => {
    const now = [...document.querySelectorAll('#heatmap .cell')].map((c) => c.textContent).join('|');
    return now !== before && now.length > 0;
  }, first, { timeout: 30000 });
  await screenshot(page, shotDir, 'demo-heatmap');
  step('the heatmap moved');

  for (const report of ['sla', 'funnel', 'attribution']) {
    await page.click(`#tab-${report}`);
    await page.click('#preset-7');
    await page.waitForFunction((name) => {
      const panel = document.getElementById('panel-' + name);
      return ['ready', 'empty', 'error'].includes(panel.dataset.state);
    }, report, { timeout: 15000 });
    const state = await page.$eval(`#panel-${report}`, (panel) => panel.dataset.state);
    const rows = await page.$$eval(`#${report}-table tbody tr`, (trs) => trs.length);
    if (state !== 'ready' || rows === 0) problems.push(`the ${report} panel is ${state} with ${rows} rows`);
    await screenshot(page, shotDir, `demo-${report}`);
    step(`the ${report} panel shows ${rows} rows from the demo's days`);
  }
});
