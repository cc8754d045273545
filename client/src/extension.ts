/** The VS Code extension (a stub until the extension issue). */
export function activate(): void {}
export function deactivate(): void {}
