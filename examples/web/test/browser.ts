// The demo page in headless Chromium, through the gateway: pick a sample digit and see the
// right prediction, draw a digit and see one, compare two sentences; the server does the
// decoding and the tokenizing. Saves a screenshot.
//
//   GATEWAY_URL=http://127.0.0.1:8000 SCREENSHOT=web-demo.png npm run test:browser
//
// The page is the one the gateway serves at /web/, or PAGE_URL: a copy of dist/ served from
// another origin, which calls the gateway named by its ?gateway= parameter (CORS).
//
// Chromium is the system's (Debian `chromium`; CHROMIUM overrides the path), driven by
// playwright-core, which downloads no browser of its own.
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { dirname } from "node:path";
import { test } from "node:test";
import { chromium, type Page } from "playwright-core";
import { GATEWAY_URL, needsGateway } from "./env";

const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";
const SCREENSHOT = process.env.SCREENSHOT ?? "";
const PAGE_URL = process.env.PAGE_URL ?? `${GATEWAY_URL}/web/`;
const TIMEOUT_MS = 15_000;

/** Draw a polyline on the pad, in fractions of its size, as one mouse stroke. */
async function stroke(page: Page, points: [number, number][]): Promise<void> {
  const box = await page.locator("#pad").boundingBox();
  assert.ok(box !== null, "the pad is not visible");
  const at = ([x, y]: [number, number]) => [box.x + x * box.width, box.y + y * box.height] as const;
  const [first, ...rest] = points.map(at);
  assert.ok(first !== undefined);
  await page.mouse.move(...first);
  await page.mouse.down();
  for (const point of rest) await page.mouse.move(...point, { steps: 8 });
  await page.mouse.up();
}

test("the demo page, through the gateway", { skip: needsGateway, timeout: 60_000 }, async () => {
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
  });
  const problems: string[] = [];
  try {
    const page = await browser.newPage({ viewport: { width: 1000, height: 900 } });
    page.setDefaultTimeout(TIMEOUT_MS);
    page.on("pageerror", (error) => problems.push(`page error: ${error.message}`));
    page.on("response", (response) => {
      if (response.status() >= 400) problems.push(`HTTP ${response.status()}: ${response.url()}`);
    });
    page.on("console", (message) => {
      if (message.type() === "error") problems.push(`console error: ${message.text()}`);
    });
    await page.goto(PAGE_URL);
    await page.locator('body[data-ready="true"]').waitFor();
    assert.equal(await page.locator("#status").getAttribute("data-live"), "true");

    // A held-out sample of a 3, painted on the pad and sent as its PNG.
    await page.locator('[data-sample="3"]').click();
    await page.locator('#digit-label[data-version="1"]', { hasText: /^3$/ }).waitFor();
    assert.equal(await page.locator("#probabilities li.top").getAttribute("data-digit"), "3");

    // A drawn 7 (a bar across the top, then a diagonal down to the left).
    await page.locator("#clear").click();
    await page.locator("#digit-label", { hasText: /^–$/ }).waitFor();
    await stroke(page, [[0.25, 0.15], [0.75, 0.15], [0.4, 0.85]]);
    await page.locator("#digit-label", { hasText: /^7$/ }).waitFor();

    // Two sentences, sent as text.
    await page.locator("#similarity-form button").click();
    const similarity = page.locator("#similarity[data-value]");
    await similarity.waitFor();
    const value = Number(await similarity.getAttribute("data-value"));
    assert.ok(value > 0.7 && value <= 1, `similarity ${value}`);

    if (SCREENSHOT !== "") {
      mkdirSync(dirname(SCREENSHOT), { recursive: true });
      await page.screenshot({ path: SCREENSHOT, fullPage: true });
    }
  } finally {
    await browser.close();
  }
  assert.deepEqual(problems, []);
});
