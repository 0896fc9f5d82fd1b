package schemas

import "encoding/json"

// UnmarshalJob reads a job as json.Unmarshal does: leniently, so that a
// worker can read a job from a newer queen. A worker reads every job it
// takes, and by reflection that was 6% of its CPU on 1-token jobs; a job
// with only plain fields (no tools, response format, logit bias or tool
// messages) is read by hand instead, to the same Job
// (FuzzUnmarshalJob compares them).
func UnmarshalJob(data []byte, job *Job) error {
	if decodePlainJob(data, job) {
		return nil
	}
	*job = Job{}
	return json.Unmarshal(data, job)
}

// decodePlainJob reads data into job when every key is one it reads by
// hand (see plainParser). It reports false, with job in any state, for
// anything else.
func decodePlainJob(data []byte, job *Job) bool {
	*job = Job{}
	p := plainParser{b: data}
	ok := p.object(func(key []byte) bool {
		switch string(key) {
		case "id":
			return p.str(&job.ID)
		case "model":
			return p.str(&job.Model)
		case "stream":
			return p.str(&job.Stream)
		case "prompt":
			return p.str(&job.Prompt)
		case "messages":
			return list(&p, &job.Messages, p.message)
		case "max_tokens":
			return p.int(&job.MaxTokens)
		case "stop":
			return list(&p, &job.Stop, p.str)
		case "temperature":
			job.Temperature = new(float64)
			return p.float(job.Temperature)
		case "top_k":
			return p.int(&job.TopK)
		case "top_p":
			return p.float(&job.TopP)
		case "min_p":
			return p.float(&job.MinP)
		case "repeat_penalty":
			return p.float(&job.RepeatPenalty)
		case "presence_penalty":
			return p.float(&job.PresencePenalty)
		case "frequency_penalty":
			return p.float(&job.FrequencyPenalty)
		case "seed":
			n, ok := p.integer(64)
			job.Seed = &n
			return ok
		case "logprobs":
			job.Logprobs = new(int)
			return p.int(job.Logprobs)
		case "n":
			return p.int(&job.N)
		case "kind":
			return p.str(&job.Kind)
		case "created_at":
			return p.time(&job.CreatedAt)
		case "deadline":
			return p.time(&job.Deadline)
		case "principal":
			return p.str(&job.Principal)
		case "event_key":
			var s string
			ok := p.str(&s)
			job.EventKey = Secret(s)
			return ok
		}
		return false
	})
	p.space()
	return ok && p.i == len(p.b)
}

// message reads a chat message of role, content and name only.
func (p *plainParser) message(m *Message) bool {
	return p.object(func(key []byte) bool {
		switch string(key) {
		case "role":
			return p.str(&m.Role)
		case "content":
			return p.str(&m.Content)
		case "name":
			return p.str(&m.Name)
		}
		return false
	})
}
