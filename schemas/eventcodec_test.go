package schemas

import (
	"bytes"
	"encoding/json"
	"math"
	"reflect"
	"testing"
)

// referenceEncode is what encoding/json writes for ev.
func referenceEncode(t testing.TB, ev *Event) []byte {
	t.Helper()
	data, err := json.Marshal(ev)
	if err != nil {
		t.Fatalf("encoding/json: %v", err)
	}
	return data
}

// checkDecode fails when the hand-written reader takes line and
// encoding/json does not read it to the same event.
func checkDecode(t *testing.T, line []byte) {
	t.Helper()
	fast, ok := decodePlainEvent(line)
	if !ok {
		return
	}
	var want Event
	if err := decodeEventJSON(line, &want); err != nil {
		t.Fatalf("decodePlainEvent took %q, encoding/json refuses it: %v", line, err)
	}
	if !reflect.DeepEqual(fast, want) {
		t.Fatalf("%q: decodePlainEvent read %+v, encoding/json %+v", line, fast, want)
	}
}

// checkUnquote fails when the string token at the start of data reads
// otherwise by hand than by encoding/json.
func checkUnquote(t *testing.T, data []byte) {
	t.Helper()
	p := plainParser{b: data}
	tok, _, ok := p.token()
	if !ok {
		return
	}
	got, ok := unquote(tok)
	var want string
	err := json.Unmarshal(tok, &want)
	if ok != (err == nil) || got != want {
		t.Fatalf("unquote(%q) = %q, %v; encoding/json: %q, %v", tok, got, ok, want, err)
	}
}

// FuzzEventCodec checks the hand-written event codec against encoding/json:
// an event built from the inputs is written byte for byte as encoding/json
// writes it and, when read back by hand, is what encoding/json reads; and
// any line the hand-written reader takes, encoding/json reads the same.
func FuzzEventCodec(f *testing.F) {
	for _, ev := range []Event{tokenEvent(), endEvent(), errorEvent()} {
		data, err := json.Marshal(&ev)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data, ev.Text, ev.WorkerID, int64(ev.Seq), int32(9038), 1e-7, uint8(0xff))
	}
	for _, s := range []string{
		`{"job_id":"j","seq":0,"type":"token","delivery":1,"token_id":1,"token_id":2}`,
		`{"job_id":"j","seq":0,"type":"token","delivery":1,"usage":{"prompt_tokens":1},"usage":{"total_tokens":2}}`,
		`{"Job_ID":"j","seq":-0,"type":"token","delivery":1e0}`, `{"seq":01}`, `{"seq":1}x`, `{"text":"a\u00e9"}`,
		`{"token_id":2147483648}`, `{"timings":{"queue_ms":1e400}}`, `{"timings":{"total_ms":-0}}`, `{ "seq" : 1 , "text" : "é" }`,
		`{"text":"\xff"}`, `{"text":null}`, `{}`, `{"job_id":"j",}`,
	} {
		f.Add([]byte(s), "<&>", "w\u2028", int64(-1), int32(-1), math.Inf(1), uint8(0))
	}
	for _, s := range []string{`"a\u00e9\n\t\"\\\/\b\f\r"`, `"\ud83d\ude00"`, `"\ud83d"`, `"\ud83d\u0041"`, `"\udc00\ud83d"`, `"\x"`, `"\u12"`, "\"\xff\xfe\"", `"\'"`} {
		f.Add([]byte(s), "", "", int64(0), int32(0), 0.0, uint8(0))
	}
	f.Fuzz(func(t *testing.T, line []byte, text, worker string, n int64, tok int32, x float64, flags uint8) {
		checkDecode(t, line)
		checkUnquote(t, line)

		ev := Event{JobID: worker + text, Seq: int(n), Type: EventType(text), Delivery: int(n >> 3), WorkerID: worker,
			Text: text, Index: int(flags & 3), Content: worker}
		if flags&4 != 0 {
			ev.TokenID = &tok
		}
		if flags&8 != 0 {
			ev.StopReason = text
			ev.Usage = &Usage{PromptTokens: int(n), CompletionTokens: int(tok), TotalTokens: int(n) + int(tok)}
		}
		if flags&16 != 0 {
			ev.Timings = &Timings{QueueMillis: x, TimeToFirstMillis: -x, PromptTokensPerSec: x * 1e21, DecodeTokensPerSec: x / 1e7, TotalMillis: float64(n)}
		}
		if flags&32 != 0 {
			ev.Tokens = []int32{tok}
		}
		got, err := ev.appendJSON(nil)
		if _, want := json.Marshal(&ev); (err != nil) != (want != nil) {
			t.Fatalf("appendJSON error %v, encoding/json's %v", err, want)
		}
		if err != nil {
			return
		}
		if want := referenceEncode(t, &ev); !bytes.Equal(got, want) {
			t.Fatalf("appendJSON wrote\n%s\nencoding/json\n%s", got, want)
		}
		checkDecode(t, got)
	})
}

// TestDecodePlainEventTakesWhatWorkersWrite: the events a worker sends
// most go through the hand-written reader, not only its fallback.
func TestDecodePlainEventTakesWhatWorkersWrite(t *testing.T) {
	for _, ev := range []Event{tokenEvent(), endEvent()} {
		data, err := ev.appendJSON(nil)
		if err != nil {
			t.Fatal(err)
		}
		got, ok := decodePlainEvent(data)
		if !ok || !reflect.DeepEqual(got, ev) {
			t.Errorf("decodePlainEvent(%s) = %+v, %v; want %+v, true", data, got, ok, ev)
		}
	}
	if _, ok := decodePlainEvent([]byte(`{"job_id":"j","seq":0,"type":"token","delivery":1,"bogus":1}`)); ok {
		t.Error("decodePlainEvent took an unknown field")
	}
}

// TestDecodeEventsRefusesUnknownFields: the fallback stays strict.
func TestDecodeEventsRefusesUnknownFields(t *testing.T) {
	_, err := DecodeEvents(nil, []byte(`{"job_id":"j","seq":0,"type":"token","delivery":1,"token_id":1,"bogus":1}`))
	if CodeOf(err) != CodeInvalidRequest {
		t.Fatalf("DecodeEvents of an event with an unknown field: %v, want %s", err, CodeInvalidRequest)
	}
}

func benchmarkEvents() []Event {
	return []Event{tokenEvent(), endEvent()}
}

// BenchmarkEncodeEvents and BenchmarkDecodeEvents compare the codec with
// encoding/json on a 1-token job's message (its token and its end).
func BenchmarkEncodeEvents(b *testing.B) {
	events := benchmarkEvents()
	b.Run("rbee", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := EncodeEvents(events); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("encoding-json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var buf bytes.Buffer
			enc := json.NewEncoder(&buf)
			for i := range events {
				if err := enc.Encode(&events[i]); err != nil {
					b.Fatal(err)
				}
			}
		}
	})
}

func BenchmarkDecodeEvents(b *testing.B) {
	data, err := EncodeEvents(benchmarkEvents())
	if err != nil {
		b.Fatal(err)
	}
	b.Run("rbee", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := DecodeEvents(nil, data); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("encoding-json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			for line := range bytes.Lines(data) {
				var ev Event
				if err := decodeEventJSON(bytes.TrimSpace(line), &ev); err != nil {
					b.Fatal(err)
				}
			}
		}
	})
}

// TestAppendEventCoversEveryField: each field of Event, set on its own on a
// token event, is written as encoding/json writes it. A field added to
// Event that appendJSON neither writes nor sends to encoding/json (plain)
// would be dropped from the wire; this fails instead.
func TestAppendEventCoversEveryField(t *testing.T) {
	typ := reflect.TypeFor[Event]()
	for i := range typ.NumField() {
		ev := tokenEvent()
		f := reflect.ValueOf(&ev).Elem().Field(i)
		switch f.Kind() {
		case reflect.String:
			f.SetString("x")
		case reflect.Int, reflect.Int32:
			f.SetInt(2)
		case reflect.Pointer:
			f.Set(reflect.New(f.Type().Elem()))
		case reflect.Slice:
			f.Set(reflect.MakeSlice(f.Type(), 1, 1))
		default:
			t.Fatalf("field %s: kind %s not covered by this test", typ.Field(i).Name, f.Kind())
		}
		got, err := AppendEvent(nil, &ev)
		if err != nil {
			t.Fatalf("field %s: %v", typ.Field(i).Name, err)
		}
		if want := referenceEncode(t, &ev); !bytes.Equal(got, want) {
			t.Errorf("field %s: AppendEvent wrote\n%s\nencoding/json\n%s", typ.Field(i).Name, got, want)
		}
	}
}
