// Loads a node's admin page in headless Chromium (Debian's `chromium`, driven by the pinned
// playwright-core), waits until the page has rendered RENDERS times, prints every
// `[data-figure]` element's text and the chart's shape as one JSON line, and saves a full-page
// screenshot. Fails on a page error, a Content Security Policy violation or a failed render.
//
//   node page.mjs URL SCREENSHOT.png      (CHROMIUM: the browser, default /usr/bin/chromium;
//                                          RENDERS: refreshes to wait for, default 2)
import { chromium } from 'playwright-core';

const [url, shot] = process.argv.slice(2);
if (!url || !shot) {
  console.error('usage: node page.mjs URL SCREENSHOT.png');
  process.exit(2);
}
const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
const renders = Number(process.env.RENDERS || 2);
/** Every wait below ends by this deadline (the page refreshes every second in the test). */
const DEADLINE_MS = 60_000;

const browser = await chromium.launch({ executablePath, headless: true });
try {
  const page = await browser.newPage({ viewport: { width: 1200, height: 900 } });
  const problems = [];
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error' && !/favicon/.test(m.location().url || '')) problems.push(`console: ${m.text()}`);
  });
  page.on('requestfailed', (r) => problems.push(`request failed: ${r.url()} ${r.failure()?.errorText}`));
  const response = await page.goto(url, { timeout: DEADLINE_MS });
  if (!response || !response.ok()) throw new Error(`GET ${url} answered ${response && response.status()}`);
  await page.waitForFunction(
    (n) => document.body.dataset.state === 'error' || Number(document.body.dataset.renders) >= n,
    renders,
    { timeout: DEADLINE_MS },
  );
  const seen = await page.evaluate(() => {
    const figures = {};
    for (const el of document.querySelectorAll('[data-figure]')) {
      const hidden = el.closest('[hidden]') !== null;
      figures[el.dataset.figure] = hidden ? null : el.textContent.trim();
    }
    const chart = document.getElementById('earnings-chart');
    const series = chart ? [...chart.querySelectorAll('polyline')].map((p) => p.dataset.series) : [];
    return {
      state: document.body.dataset.state,
      renders: Number(document.body.dataset.renders),
      title: document.title,
      figures,
      chart_series: series,
      forms: document.forms.length,
    };
  });
  await page.screenshot({ path: shot, fullPage: true });
  seen.headers = { 'content-security-policy': response.headers()['content-security-policy'] ?? null };
  seen.problems = problems;
  console.log(JSON.stringify(seen));
} finally {
  await browser.close();
}
