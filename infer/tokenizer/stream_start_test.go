package tokenizer

import "testing"

func TestStreamDecoderStartOfText(t *testing.T) {
	tok := testVocab(t, storiesFile(t, "stories260K.gguf"))
	ids, err := tok.Encode("Once upon a time", false, false)
	if err != nil {
		t.Fatal(err)
	}
	for _, start := range []bool{false, true} {
		d := tok.NewStreamDecoder()
		if start {
			d.StartOfText()
		}
		got := ""
		for _, id := range ids {
			got += d.Add(id)
		}
		want := " Once upon a time"
		if start {
			want = "Once upon a time"
		}
		if got != want {
			t.Errorf("start of text %v: %q, want %q", start, got, want)
		}
	}
}
