/** RabbitMQ STOMP destinations the broker understands. */

export type Destination =
  | { kind: "queue"; name: string; declare: boolean }
  | { kind: "topic"; key: string }
  | { kind: "temp"; name: string };

export function parseDestination(d: string): Destination | undefined {
  const tail = (prefix: string) => (d.startsWith(prefix) && d.length > prefix.length ? d.slice(prefix.length) : undefined);
  let t: string | undefined;
  if ((t = tail("/queue/")) !== undefined) return { kind: "queue", name: t, declare: true };
  if ((t = tail("/amq/queue/")) !== undefined) return { kind: "queue", name: t, declare: false };
  if ((t = tail("/reply-queue/")) !== undefined) return { kind: "queue", name: t, declare: false };
  if ((t = tail("/topic/")) !== undefined) return { kind: "topic", key: t };
  if ((t = tail("/exchange/amq.topic/")) !== undefined) return { kind: "topic", key: t };
  if ((t = tail("/temp-queue/")) !== undefined) return { kind: "temp", name: t };
  return undefined;
}

/** amq.topic matching: words split on '.', `*` matches one word, `#` zero or more (O(p·k), no backtracking blow-up). */
export function topicMatches(pattern: string[], key: string[]): boolean {
  // prev[k]: pattern prefix matches the first k key words
  let prev: boolean[] = new Array<boolean>(key.length + 1).fill(false);
  prev[0] = true;
  for (const p of pattern) {
    const cur: boolean[] = new Array<boolean>(key.length + 1).fill(false);
    if (p === "#") {
      let any = false;
      for (let k = 0; k <= key.length; k++) {
        any = any || prev[k]!;
        cur[k] = any;
      }
    } else {
      for (let k = 1; k <= key.length; k++) cur[k] = prev[k - 1]! && (p === "*" || p === key[k - 1]);
    }
    prev = cur;
  }
  return prev[key.length]!;
}
