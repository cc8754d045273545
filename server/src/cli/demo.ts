export async function main(_argv: string[]): Promise<number> {
  throw new Error("vmc demo is being built");
}
