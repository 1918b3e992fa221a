// What the browser scripts share: headless Chromium launched one way, a step log with times,
// the browser's console kept for a failure's report, one overall timeout, and a stop that
// closes Chromium (bounded) before exiting. Used by passkeys-e2e.mjs and pages-e2e.mjs.
import { chromium } from 'playwright-core';

export class Run {
  constructor(timeoutMs) {
    this.started = Date.now();
    this.log = [];
    this.browser = undefined;
    this.current = 'start';
    this.stopping = false;
    this.overall = setTimeout(
      () => void this.stop(1, `not ok - timed out after ${timeoutMs} ms during: ${this.current}\n${this.log.join('\n')}`),
      timeoutMs,
    );
  }

  step(name) {
    console.log(`ok - ${name} (${Date.now() - this.started} ms)`);
  }

  async launch(executablePath) {
    this.current = 'launch Chromium';
    this.browser = await chromium.launch({
      executablePath,
      headless: true,
      // playwright-core adds its own fresh --user-data-dir (a temporary profile it deletes).
      args: [
        '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
        '--disable-background-networking', '--disable-component-update', '--disable-sync',
        '--disable-dev-shm-usage', // containers often have a 64 MB /dev/shm
      ],
      timeout: 30_000,
    });
    return this.browser;
  }

  /** Keep what a page says on its console, for the report of a failure. */
  watch(page) {
    page.on('console', (message) => this.log.push(`[console.${message.type()}] ${message.text()}`));
    page.on('pageerror', (error) => this.log.push(`[pageerror] ${error.message}`));
    return page;
  }

  /** The run is over: no timeout any more. */
  done() {
    clearTimeout(this.overall);
  }

  async stop(code, message) {
    if (this.stopping) return; // the timeout fired: the step it interrupted fails too, unreported
    this.stopping = true;
    if (message) console.log(message);
    const closing = this.browser?.close().catch(() => {});
    if (closing) await Promise.race([closing, new Promise((f) => setTimeout(f, 5000))]);
    process.exit(code);
  }
}
