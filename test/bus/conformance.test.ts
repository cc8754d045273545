// The cross-broker conformance suite: the same assertions against the embedded broker, RabbitMQ
// and ActiveMQ Classic (differences only where test/harness/brokers.ts documents a quirk; see
// docs/CONFORMANCE.md). One broker per target for the whole file: RabbitMQ takes seconds to
// start. The sections live in test/bus/conformance/; durability runs last (it restarts brokers).
import { forEachBroker } from "./fixture";
import { durabilityConformance } from "./conformance/durability";
import { messagingConformance } from "./conformance/messaging";
import { protocolConformance } from "./conformance/protocol";
import { pythonConformance } from "./conformance/python";

forEachBroker("STOMP conformance", (fx) => {
  protocolConformance(fx);
  messagingConformance(fx);
  pythonConformance(fx);
  durabilityConformance(fx);
});
