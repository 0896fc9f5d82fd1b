// Package worker serves one loaded model: it pulls jobs from the model's
// JetStream work queue, runs them on the local engine and streams tokens back
// on each job's reply subject.
//
// # Slots, the batch and leases
//
// A worker decodes up to Slots jobs together: one scheduler (infer.Scheduler)
// advances them all one step at a time through the engine, so every weight
// is read once per step for the whole batch, and jobs join and leave it
// between steps. Their keys and values share one KV pool (KVTokens), taken
// in blocks as jobs grow. The worker pulls a job only while a slot is free,
// so a job waits in the stream, where any worker of the model can take it,
// rather than in a client buffer while its lease runs. The lease (the
// consumer's AckWait) is renewed every
// AckWait/3 while a job runs; each renewal waits for the server's answer, and
// when none has come for a whole AckWait the job is stopped, since JetStream
// has by then handed it to another worker.
//
// # The token stream
//
// A job's reply subject receives token events (seq 0, 1, 2...; every sampled
// token has one, even when its text is held back and empty, and a last event
// with token_id -1 may carry held-back text), then one end or error event,
// then an empty message. The job is acknowledged only after that, so a worker
// that dies mid-job leaves it to be redelivered.
//
// # How a job ends
//
//   - Finished, or failed in a way a retry cannot fix (context length, chat
//     template, engine failure, cancelled on Cancel(job ID)): an end or error
//     event, the empty message, then a synchronous ack.
//   - Unreadable, invalid or for another model: an error event and the empty
//     message when the reply subject is known, then Term, so the poison job is
//     never redelivered.
//   - Interrupted by shutdown (ShutdownGrace ran out) or a lost lease before
//     its first token event: Nak, and nothing is published. The job goes back
//     to the queue for another worker and the client never notices.
//   - Interrupted after it streamed tokens: an error event (worker_shutdown,
//     or bus_unavailable for a lost lease) and the empty message, then Term,
//     because a retry would send the client the same text twice.
//
// # Shutdown
//
// When Run's context is done the worker announces "draining", withdraws its
// waiting pull requests at once (a job already on its way is Nak'd), lets
// the jobs in hand finish within
// ShutdownGrace, interrupts the rest as above, deletes its heartbeat key and
// returns.
package worker
