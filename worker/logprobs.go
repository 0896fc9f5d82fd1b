package worker

import (
	"github.com/rbee-dev/rbee/infer"
	"github.com/rbee-dev/rbee/schemas"
)

// wireLogprobs puts a token's logprobs on its event; nil when the job did
// not ask for them.
func wireLogprobs(lp *infer.Logprobs) *schemas.TokenLogprobs {
	if lp == nil {
		return nil
	}
	out := &schemas.TokenLogprobs{Logprob: float64(lp.Logprob), Bytes: lp.Bytes, Top: make([]schemas.TopLogprob, len(lp.Top))}
	for i, a := range lp.Top {
		out.Top[i] = schemas.TopLogprob{TokenID: a.ID, Bytes: a.Bytes, Logprob: float64(a.Logprob)}
	}
	return out
}

// logitBias converts the wire's bias to the sampler's.
func logitBias(b map[int32]float64) map[int32]float32 {
	if len(b) == 0 {
		return nil
	}
	out := make(map[int32]float32, len(b))
	for id, v := range b {
		out[id] = float32(v)
	}
	return out
}
