/** The ERROR `message` for a refusal text, RabbitMQ-style where RabbitMQ has one. */
export function errorKind(reason: string): string {
  if (reason.startsWith("NOT_FOUND")) return "not_found";
  if (reason.startsWith("PRECONDITION_FAILED")) return "precondition_failed";
  if (reason.startsWith("RESOURCE_LOCKED")) return "resource_locked";
  if (reason.startsWith("RESOURCE_LIMIT")) return "Resource limit";
  return "Bad header";
}
