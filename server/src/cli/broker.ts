export async function main(_argv: string[]): Promise<number> {
  throw new Error("the embedded broker is being built");
}
