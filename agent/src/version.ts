/** Version announced in HELLO (`agentVersion`); kept equal to the workspace version. */
export const AGENT_VERSION = "0.1.0";
