// Drives real Chromium (through playwright-core) to the proof-of-work page and
// waits until its Web Worker has solved the challenge and the page has gone on.
// Usage: node browser_challenge.js BASE_URL CHROMIUM
const { chromium } = require('playwright-core');
(async () => {
  const [base, executablePath] = process.argv.slice(2);
  const browser = await chromium.launch({ executablePath, args: ['--no-sandbox'] });
  try {
    const page = await browser.newPage();
    const first = await page.goto(`${base}/challenge?return_to=/status`);
    console.log(`challenge ${first.status()}`);
    await page.waitForURL((u) => new URL(u).pathname === '/status', { timeout: 60000 });
    const cookies = await page.context().cookies();
    const clearance = cookies.find((c) => c.name === 'palisade_clearance');
    console.log(`arrived ${new URL(page.url()).pathname} clearance=${!!clearance} httponly=${!!(clearance && clearance.httpOnly)}`);
  } finally {
    await browser.close();
  }
})().catch((e) => { console.error(`FAILED ${e.message}`); process.exit(1); });
