package schemas

import "time"

func ptr[T any](v T) *T { return &v }

// Valid examples of every wire message; tests change one thing at a time.

func validJob() Job {
	return Job{
		ID: "job-1", Model: "llama3:8b", Stream: "rbee.v2.stream.q1.job-1",
		Prompt: "Once upon a time", MaxTokens: 64, Stop: []string{"\n\n"},
		Sampling: Sampling{
			Temperature: ptr(0.7), TopK: 40, TopP: 0.9, MinP: 0.05, RepeatPenalty: 1.1,
			PresencePenalty: 0.5, FrequencyPenalty: -0.5, Seed: ptr[int64](42),
		},
		CreatedAt: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC),
	}
}

func validChatJob() Job {
	j := validJob()
	j.Prompt = ""
	j.Messages = []Message{{Role: "system", Content: "Be brief."}, {Role: "user", Content: "Hi"}}
	return j
}

func validInferRequest() InferRequest {
	return InferRequest{Model: "tiny", Messages: []Message{{Role: "user", Content: "Hi"}}, MaxTokens: 16, Sampling: Sampling{Temperature: ptr(0.0)}}
}

func tokenEvent() Event {
	return Event{JobID: "job-1", Seq: 0, Type: EventToken, Delivery: 1, WorkerID: "w1", Text: "Once", TokenID: ptr[int32](9038)}
}

func endEvent() Event {
	return Event{
		JobID: "job-1", Seq: 7, Type: EventEnd, Delivery: 1, StopReason: StopReasonLength,
		Usage:   &Usage{PromptTokens: 5, CompletionTokens: 6, TotalTokens: 11},
		Timings: &Timings{QueueMillis: 1, TimeToFirstMillis: 2, PromptTokensPerSec: 300, DecodeTokensPerSec: 50, TotalMillis: 120},
	}
}

func errorEvent() Event {
	return Event{JobID: "job-1", Seq: 3, Type: EventError, Delivery: 2, Error: Errorf(CodeEngineFailure, "out of memory")}
}

func validWorkerHeartbeat() WorkerHeartbeat {
	return WorkerHeartbeat{
		WorkerID: "w1", HiveID: "h1", Model: "tiny", State: WorkerReady, Slots: 4, Busy: 2,
		PID: 1234, Context: 2048, Time: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC),
	}
}

func validHiveHeartbeat() HiveHeartbeat {
	return HiveHeartbeat{
		HiveID: "h1", Hostname: "box", CPUs: 16, MemoryBytes: 64 << 30, FreeBytes: 32 << 30,
		Workers: []string{"w1", "w2"}, Time: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC),
	}
}

func validAuditEvent() AuditEvent {
	return AuditEvent{
		Type: AuditJobFinished, Time: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
		WorkerID: "w-1", Model: "stories260K", JobID: "job-1", Outcome: OutcomeCompleted, Delivery: 1,
		Usage: &Usage{PromptTokens: 5, CompletionTokens: 3, TotalTokens: 8},
	}
}

func validHiveListReply() HiveListReply {
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	return HiveListReply{
		HiveID: "h1", Draining: true,
		Workers: []HiveWorkerStatus{{ID: "w1", Model: "tiny", State: "running", PID: 42, Restarts: 1, StartedAt: at, LastBusy: at}},
		Models:  []HiveModelStatus{{Name: "tiny", Wanted: 1}, {Name: "big", Rejected: CodeInsufficientRAM}},
	}
}

func validWorkerProgress() WorkerProgress {
	return WorkerProgress{
		WorkerID: "w1", HiveID: "h1", Model: "tiny", Phase: LoadLoading, DoneBytes: 512 << 20, TotalBytes: 1 << 30,
		Time: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
	}
}

func failedWorkerProgress() WorkerProgress {
	p := validWorkerProgress()
	p.Phase, p.Error = LoadFailed, Errorf(CodeEngineFailure, "tensor output_norm.weight is missing")
	return p
}
