/**
 * The endpoints' log: stderr (stdout carries the protocol), one line per event, at most
 * `VMC_RPC_LOG_RATE` lines per second (default 200; 0 = unlimited) so a flood of bad input
 * cannot turn into a flood of log; suppressed lines are counted and reported.
 */
export function stderrLog(prefix: string, env: NodeJS.ProcessEnv = process.env): (message: string) => void {
  const perSecond = Number(env.VMC_RPC_LOG_RATE ?? 200);
  let windowStart = 0;
  let inWindow = 0;
  let suppressed = 0;
  return (message: string) => {
    const now = Date.now();
    if (now - windowStart >= 1000) {
      if (suppressed) process.stderr.write(`${prefix}: ${suppressed} log lines suppressed\n`);
      windowStart = now;
      inWindow = 0;
      suppressed = 0;
    }
    if (perSecond > 0 && ++inWindow > perSecond) {
      suppressed++;
      return;
    }
    process.stderr.write(`${prefix}: ${message.replace(/\n/g, "\\n").slice(0, 2000)}\n`);
  };
}
