// The payer's side in a real browser (Debian's headless Chromium, driven by playwright-core):
// open the authorization link, press Authorize, find the bill in the card package and open its
// PDF in Chromium's viewer. Screenshots of each page (and of the bill's first page) go to
// --screenshots.
//
// usage: NODE_PATH=.tools/node/node_modules node auth_flow.cjs --auth-url URL --card-package URL --screenshots DIR

const { mkdirSync } = require("node:fs");
const { join } = require("node:path");
const { chromium } = require("playwright-core");

const args = Object.fromEntries(
  process.argv.slice(2).reduce((pairs, value, index, all) => (index % 2 === 0 ? [...pairs, [value.replace(/^--/, ""), all[index + 1]]] : pairs), []),
);
for (const required of ["auth-url", "card-package", "screenshots"]) {
  if (!args[required]) {
    console.error(`missing --${required}`);
    process.exit(2);
  }
}
mkdirSync(args.screenshots, { recursive: true });

async function main() {
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
try {
  const page = await browser.newPage({ viewport: { width: 480, height: 800 }, locale: "zh-CN" });
  await page.goto(args["auth-url"]);
  const amount = (await page.textContent("#amount")).trim();
  await page.screenshot({ path: join(args.screenshots, "1-authorize.png"), fullPage: true });
  await page.click("#authorize");
  await page.waitForSelector("#message");
  const message = (await page.textContent("#message")).trim();
  if (!message.startsWith("Authorized")) throw new Error(`unexpected answer: ${message}`);
  await page.screenshot({ path: join(args.screenshots, "2-authorized.png"), fullPage: true });

  // The bill is issued in the background: reload the card package until it shows.
  let cards = 0;
  for (let attempt = 0; attempt < 100 && cards === 0; attempt++) {
    await page.goto(args["card-package"]);
    cards = await page.locator(".card").count();
    if (cards === 0) await page.waitForTimeout(100);
  }
  if (cards === 0) throw new Error("the bill never reached the card package");
  await page.screenshot({ path: join(args.screenshots, "3-card-package.png"), fullPage: true });
  const cardText = await page.textContent(".card");
  if (!cardText.includes(amount)) throw new Error(`the card does not show ${amount}: ${cardText}`);

  const href = await page.getAttribute(".pdf-link", "href");
  const pdf = await page.request.get(new URL(href, page.url()).toString());
  const body = await pdf.body();
  if (!pdf.ok() || pdf.headers()["content-type"] !== "application/pdf" || body.subarray(0, 5).toString() !== "%PDF-") {
    throw new Error(`the PDF link is broken: ${pdf.status()} ${pdf.headers()["content-type"]}`);
  }
  // The bill itself, as the payer sees it: Chromium's PDF viewer draws its first page.
  const viewer = await browser.newPage({ viewport: { width: 900, height: 700 } });
  await viewer.goto(new URL(href, page.url()).toString());
  await viewer.waitForTimeout(1500);
  await viewer.screenshot({ path: join(args.screenshots, "4-bill-pdf.png") });
  // Chromium opened it as a PDF document (its viewer), not as a download or text.
  const viewed_as = await viewer.evaluate(() => document.contentType);
  console.log(JSON.stringify({ amount, message, cards, pdf_bytes: body.length, viewed_as }));
} finally {
  await browser.close();
}
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
