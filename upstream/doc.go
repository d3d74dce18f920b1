// Package upstream is eosproxy's own client to the backend: every
// connection to the backend's brokers is dialled here, and every request
// eosproxy makes on its own behalf is made here.
//
// It owns:
//   - the admin client (kgo): broker metadata, end offsets, the look-ups
//     that settle a write with an unknown outcome (lookup.go, waiting for
//     the high watermark in hwbound.go), consumer group descriptions and
//     the commit of a decided transaction's offsets (groups.go, offsets.go);
//   - the writes of committed transactions: rounds of acks=all Produce
//     requests, or, under a producer id of eosproxy's own, the ordered pipe
//     to each leader (forward.go, pipe.go);
//   - the backend's producer ids: the pool fetched ahead and the durable
//     pairing of each idempotent client's producer id with one (pairing.go);
//   - the instance lease and producer id blocks, in topics of eosproxy's
//     own (instance.go);
//   - the classification of a Produce error as clear or unclear
//     (Ambiguous).
//
// One Client serves both dedup's producer table (dedup.Backend) and the
// transaction coordinator (txnstate.Backend, txnstate.IdempotentBackend).
//
// Where the line with package proxy is: proxy faces clients only. A client
// connection is paired with a connection to the broker it addresses;
// Client.Dial opens that connection too (one dialler, one fault-injection
// hook, one timeout), but the bytes on it are the client's, and proxy reads,
// forwards and answers them itself. Whatever eosproxy asks the backend for
// its own sake (never on a client's connection) is asked through a Client.
// Proxy keeps the address map (which broker listens where, learnt from
// Brokers and from clients' metadata answers; Config.BrokerAddr reads it)
// and the consumer group view built from client traffic (Config.Groups).
package upstream
