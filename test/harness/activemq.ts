/**
 * Starts a private ActiveMQ Classic 5.17 (Debian's `activemq` package) for one test file:
 * `java -jar activemq.jar start xbean:file:...` directly (the Debian init script wants a system
 * instance under /var/lib/activemq), with a generated activemq.xml: one STOMP transport on a free
 * loopback port, KahaDB in a temp dir, JMX off, and the simple authentication plugin with the
 * user guest/guest so wrong credentials are refused as on the other brokers.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { executable } from "./components";
import { stompAnswers } from "./embedded-broker";
import { freePort } from "./ports";

const activeMqJar = "/usr/share/activemq/bin/activemq.jar";
const java = "/usr/bin/java";

/** True when Debian's activemq package and a Java runtime are installed. */
export const activeMqInstalled = (): boolean => existsSync(activeMqJar) && executable(java);

export interface ActiveMq {
  url: string;
  host: string;
  port: number;
  readonly pid: number;
  dataDir: string;
  stop(): Promise<void>;
  kill(signal?: NodeJS.Signals): Promise<void>;
  /** Stops (SIGTERM: a clean shutdown; SIGKILL after a deadline) and starts again on the same port and store. */
  restart(): Promise<void>;
  log(): string;
}

function waitExit(child: ChildProcess, timeoutMs: number): Promise<boolean> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(true);
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(false), timeoutMs);
    child.once("exit", () => {
      clearTimeout(timer);
      resolve(true);
    });
  });
}

function brokerXml(host: string, port: number, dataDir: string): string {
  return `<beans xmlns="http://www.springframework.org/schema/beans"
  xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
  xsi:schemaLocation="http://www.springframework.org/schema/beans http://www.springframework.org/schema/beans/spring-beans-2.0.xsd
  http://activemq.apache.org/schema/core http://activemq.apache.org/schema/core/activemq-core.xsd">
  <broker xmlns="http://activemq.apache.org/schema/core" brokerName="vmc" useJmx="false" persistent="true"
          schedulerSupport="false" advisorySupport="false" dataDirectory="${dataDir}/data">
    <persistenceAdapter><kahaDB directory="${dataDir}/data/kahadb"/></persistenceAdapter>
    <plugins>
      <simpleAuthenticationPlugin anonymousAccessAllowed="false">
        <users><authenticationUser username="guest" password="guest" groups="users"/></users>
      </simpleAuthenticationPlugin>
    </plugins>
    <transportConnectors>
      <transportConnector name="stomp" uri="stomp://${host}:${port}?transport.closeAsync=false"/>
    </transportConnectors>
  </broker>
</beans>
`;
}

export async function startActiveMq(opts: { readyTimeoutMs?: number } = {}): Promise<ActiveMq> {
  const host = "127.0.0.1";
  const port = await freePort();
  const dataDir = mkdtempSync(join(tmpdir(), "vmc-activemq-"));
  const readyTimeoutMs = opts.readyTimeoutMs ?? 90_000;
  mkdirSync(join(dataDir, "conf"));
  mkdirSync(join(dataDir, "data"));
  const xml = join(dataDir, "conf", "activemq.xml");
  writeFileSync(xml, brokerXml(host, port, dataDir));
  let child: ChildProcess | undefined;
  let output = "";
  let stopped = false;

  const killGroup = (signal: NodeJS.Signals): void => {
    if (!child?.pid) return;
    try {
      process.kill(-child.pid, signal);
    } catch {
      // already gone
    }
  };
  const kill = async (signal: NodeJS.Signals = "SIGKILL"): Promise<void> => {
    if (!child) return;
    killGroup(signal);
    await waitExit(child, 60_000);
  };

  const launch = async (): Promise<void> => {
    const args = [
      "-Xms64m",
      "-Xmx256m",
      "-XX:+UseSerialGC",
      "-Djava.awt.headless=true",
      "-Dactivemq.home=/usr/share/activemq",
      `-Dactivemq.base=${dataDir}`,
      `-Dactivemq.conf=${join(dataDir, "conf")}`,
      `-Dactivemq.data=${join(dataDir, "data")}`,
      "-jar",
      activeMqJar,
      "start",
      `xbean:file:${xml}`,
    ];
    const proc = spawn(java, args, { cwd: dataDir, detached: true, stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, HOME: dataDir } });
    child = proc;
    const keep = (c: Buffer): void => {
      if (output.length < 200_000) output += c.toString();
    };
    proc.stdout?.on("data", keep);
    proc.stderr?.on("data", keep);
    const deadline = Date.now() + readyTimeoutMs;
    while (Date.now() < deadline) {
      if (proc.exitCode !== null || proc.signalCode !== null) {
        throw new Error(`activemq exited (${proc.exitCode ?? proc.signalCode}) before answering STOMP:\n${output}`);
      }
      if (await stompAnswers(host, port, 1000)) return;
      await new Promise((r) => setTimeout(r, 100));
    }
    await kill("SIGKILL");
    throw new Error(`ActiveMQ did not answer STOMP CONNECT on ${host}:${port} within ${readyTimeoutMs} ms:\n${output}`);
  };

  const stop = async (): Promise<void> => {
    if (stopped) return;
    stopped = true;
    await kill("SIGKILL");
    rmSync(dataDir, { recursive: true, force: true });
  };

  try {
    await launch();
  } catch (err) {
    await stop();
    throw err;
  }
  return {
    url: `stomp://${host}:${port}`,
    host,
    port,
    get pid() {
      return child?.pid ?? -1;
    },
    dataDir,
    stop,
    kill,
    async restart() {
      if (child) {
        killGroup("SIGTERM");
        if (!(await waitExit(child, 30_000))) await kill("SIGKILL");
      }
      await launch();
    },
    log: () => output,
  };
}
