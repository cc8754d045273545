import type * as vscode from "vscode";

const KEY = "vmc.broker.credentials";

/** Broker login and passcode, kept in the editor's SecretStorage, never in settings. */
export interface BrokerCredentials {
  login: string;
  passcode: string;
}

export async function loadCredentials(secrets: vscode.SecretStorage): Promise<BrokerCredentials | undefined> {
  const raw = await secrets.get(KEY);
  if (!raw) return undefined;
  try {
    const parsed = JSON.parse(raw) as Partial<BrokerCredentials>;
    return typeof parsed.login === "string" && typeof parsed.passcode === "string" ? { login: parsed.login, passcode: parsed.passcode } : undefined;
  } catch {
    return undefined;
  }
}

export async function storeCredentials(secrets: vscode.SecretStorage, credentials: BrokerCredentials | undefined): Promise<void> {
  if (credentials) await secrets.store(KEY, JSON.stringify(credentials));
  else await secrets.delete(KEY);
}

/** The broker URL with the stored credentials as its user info (the server reads them from there). */
export function withCredentials(url: string, credentials: BrokerCredentials | undefined): string {
  if (!url || !credentials) return url;
  try {
    const parsed = new URL(url);
    parsed.username = credentials.login;
    parsed.password = credentials.passcode;
    return parsed.toString();
  } catch {
    return url;
  }
}
