package chat

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ardanlabs/jinja"
)

// The testdata templates are the chat_template values of the models'
// tokenizer_config.json on Hugging Face, as GGUF conversions copy them into
// tokenizer.chat_template: meta-llama/Llama-2-7b-chat-hf,
// meta-llama/Meta-Llama-3-8B-Instruct, Qwen/Qwen2.5-7B-Instruct,
// mistralai/Mistral-7B-Instruct-v0.1, HuggingFaceTB/SmolLM2-135M-Instruct and
// TinyLlama/TinyLlama-1.1B-Chat-v1.0 (Zephyr's format). The expected strings
// were produced by Python's jinja2 configured as transformers'
// apply_chat_template configures it.

var (
	withSystem = []Message{
		{Role: "system", Content: "You are a helpful assistant."},
		{Role: "user", Content: "Hello!"},
		{Role: "assistant", Content: "  Hi there.  "},
		{Role: "user", Content: "What is 2+2?"},
	}
	noSystem = withSystem[1:]
)

// bosEOS are each model's special tokens as their GGUF files name them.
var bosEOS = map[string][2]string{
	"llama2-chat":      {"<s>", "</s>"},
	"llama3-instruct":  {"<|begin_of_text|>", "<|eot_id|>"},
	"qwen2.5-instruct": {"", "<|im_end|>"},
	"mistral-instruct": {"<s>", "</s>"},
	"smollm2-instruct": {"<|im_start|>", "<|im_end|>"},
	"tinyllama-chat":   {"<s>", "</s>"},
}

func parseFile(t testing.TB, name string) *Template {
	t.Helper()
	src, err := os.ReadFile(filepath.Join("testdata", name+".jinja"))
	if err != nil {
		t.Fatal(err)
	}
	tmpl, err := Parse(string(src))
	if err != nil {
		t.Fatalf("Parse(%s): %v", name, err)
	}
	return tmpl
}

func TestRealTemplates(t *testing.T) {
	cases := []struct {
		model  string
		msgs   []Message
		addGen bool
		want   string
	}{
		{"llama2-chat", withSystem, true, "<s>[INST] <<SYS>>\nYou are a helpful assistant.\n<</SYS>>\n\nHello! [/INST] Hi there. </s><s>[INST] What is 2+2? [/INST]"},
		{"llama2-chat", withSystem, false, "<s>[INST] <<SYS>>\nYou are a helpful assistant.\n<</SYS>>\n\nHello! [/INST] Hi there. </s><s>[INST] What is 2+2? [/INST]"},
		{"llama2-chat", noSystem, true, "<s>[INST] Hello! [/INST] Hi there. </s><s>[INST] What is 2+2? [/INST]"},
		{"llama2-chat", noSystem, false, "<s>[INST] Hello! [/INST] Hi there. </s><s>[INST] What is 2+2? [/INST]"},
		{"llama3-instruct", withSystem, true, "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are a helpful assistant.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHello!<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nHi there.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"},
		{"llama3-instruct", withSystem, false, "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are a helpful assistant.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHello!<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nHi there.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|>"},
		{"llama3-instruct", noSystem, true, "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHello!<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nHi there.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"},
		{"llama3-instruct", noSystem, false, "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHello!<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nHi there.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|>"},
		{"qwen2.5-instruct", withSystem, true, "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHello!<|im_end|>\n<|im_start|>assistant\n  Hi there.  <|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n"},
		{"qwen2.5-instruct", withSystem, false, "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHello!<|im_end|>\n<|im_start|>assistant\n  Hi there.  <|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n"},
		{"qwen2.5-instruct", noSystem, true, "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n<|im_start|>user\nHello!<|im_end|>\n<|im_start|>assistant\n  Hi there.  <|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n"},
		{"qwen2.5-instruct", noSystem, false, "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n<|im_start|>user\nHello!<|im_end|>\n<|im_start|>assistant\n  Hi there.  <|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n"},
		{"mistral-instruct", noSystem, true, "<s>[INST] Hello! [/INST]  Hi there.  </s> [INST] What is 2+2? [/INST]"},
		{"mistral-instruct", noSystem, false, "<s>[INST] Hello! [/INST]  Hi there.  </s> [INST] What is 2+2? [/INST]"},
		{"smollm2-instruct", withSystem, true, "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHello!<|im_end|>\n<|im_start|>assistant\n  Hi there.  <|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n"},
		{"smollm2-instruct", withSystem, false, "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHello!<|im_end|>\n<|im_start|>assistant\n  Hi there.  <|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n"},
		{"smollm2-instruct", noSystem, true, "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nHello!<|im_end|>\n<|im_start|>assistant\n  Hi there.  <|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n"},
		{"smollm2-instruct", noSystem, false, "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nHello!<|im_end|>\n<|im_start|>assistant\n  Hi there.  <|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n"},
		{"tinyllama-chat", withSystem, true, "<|system|>\nYou are a helpful assistant.</s>\n<|user|>\nHello!</s>\n<|assistant|>\n  Hi there.  </s>\n<|user|>\nWhat is 2+2?</s>\n<|assistant|>\n"},
		{"tinyllama-chat", withSystem, false, "<|system|>\nYou are a helpful assistant.</s>\n<|user|>\nHello!</s>\n<|assistant|>\n  Hi there.  </s>\n<|user|>\nWhat is 2+2?</s>\n"},
		{"tinyllama-chat", noSystem, true, "<|user|>\nHello!</s>\n<|assistant|>\n  Hi there.  </s>\n<|user|>\nWhat is 2+2?</s>\n<|assistant|>\n"},
		{"tinyllama-chat", noSystem, false, "<|user|>\nHello!</s>\n<|assistant|>\n  Hi there.  </s>\n<|user|>\nWhat is 2+2?</s>\n"},
	}
	for _, tc := range cases {
		tmpl := parseFile(t, tc.model)
		tok := bosEOS[tc.model]
		got, err := tmpl.Render(tc.msgs, tc.addGen, tok[0], tok[1])
		if err != nil {
			t.Errorf("%s (%d messages, add_generation_prompt=%v): %v", tc.model, len(tc.msgs), tc.addGen, err)
			continue
		}
		if got != tc.want {
			t.Errorf("%s (%d messages, add_generation_prompt=%v):\n got %q\nwant %q", tc.model, len(tc.msgs), tc.addGen, got, tc.want)
		}
	}
}

// TestSystemMerged: templates that refuse a system message get it merged
// into the first user turn, as llama.cpp does; the others render it
// themselves.
func TestSystemMerged(t *testing.T) {
	for _, tc := range []struct {
		model string
		msgs  []Message
		want  string
	}{
		{"gemma2-it", withSystem, "<bos><start_of_turn>user\nYou are a helpful assistant.\n\nHello!<end_of_turn>\n<start_of_turn>model\nHi there.<end_of_turn>\n" +
			"<start_of_turn>user\nWhat is 2+2?<end_of_turn>\n<start_of_turn>model\n"},
		{"gemma2-it", []Message{{Role: "system", Content: "Be brief."}}, "<bos><start_of_turn>user\nBe brief.<end_of_turn>\n<start_of_turn>model\n"},
		{"mistral-instruct", withSystem, "<s>[INST] You are a helpful assistant.\n\nHello! [/INST]  Hi there.  </s> [INST] What is 2+2? [/INST]"},
	} {
		tmpl := parseFile(t, tc.model)
		if tmpl.SupportsSystem() {
			t.Errorf("%s: SupportsSystem is true", tc.model)
		}
		got, err := tmpl.Render(tc.msgs, true, "<bos>", "<eos>")
		if tc.model == "mistral-instruct" {
			got, err = tmpl.Render(tc.msgs, true, "<s>", "</s>")
		}
		if err != nil || got != tc.want {
			t.Errorf("%s: Render = %q, %v\nwant %q", tc.model, got, err, tc.want)
		}
	}
	for _, model := range []string{"llama2-chat", "llama3-instruct", "qwen2.5-instruct", "smollm2-instruct", "tinyllama-chat"} {
		if !parseFile(t, model).SupportsSystem() {
			t.Errorf("%s renders system messages, but SupportsSystem is false", model)
		}
	}
	if !mustParse(t, "").SupportsSystem() {
		t.Error("the fallback renders system messages, but SupportsSystem is false")
	}
}

func TestRaiseExceptionSurfaces(t *testing.T) {
	cases := []struct {
		name string
		tmpl *Template
		msgs []Message
		want string
	}{
		{
			name: "mistral rejects an unknown role",
			tmpl: parseFile(t, "mistral-instruct"),
			msgs: []Message{{Role: "user", Content: "a"}, {Role: "tool", Content: "b"}},
			want: "Only user and assistant roles are supported!",
		},
		{
			name: "llama 2 rejects two user turns in a row",
			tmpl: parseFile(t, "llama2-chat"),
			msgs: []Message{{Role: "user", Content: "a"}, {Role: "user", Content: "b"}},
			want: "Conversation roles must alternate user/assistant/user/assistant/...",
		},
		{
			name: "raised from a macro inside a loop",
			tmpl: mustParse(t, `{% macro check(m) %}{% if m.role == 'tool' %}{{ raise_exception('no tools: ' ~ m.content) }}{% endif %}{% endmacro %}`+
				`{% for m in messages %}{{ check(m) }}{% endfor %}`),
			msgs: []Message{{Role: "user", Content: "a"}, {Role: "tool", Content: "x"}},
			want: "no tools: x",
		},
		{
			name: "non-string message",
			tmpl: mustParse(t, `{{ raise_exception(messages|length) }}`),
			msgs: noSystem,
			want: "3",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out, err := tc.tmpl.Render(tc.msgs, true, "<s>", "</s>")
			var raised *RaisedError
			if !errors.As(err, &raised) {
				t.Fatalf("Render = (%q, %v), want a *RaisedError", out, err)
			}
			if raised.Message != tc.want || out != "" {
				t.Fatalf("raised %q with output %q, want %q and no output", raised.Message, out, tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not carry the message", err)
			}
		})
	}
}

func mustParse(t testing.TB, src string) *Template {
	t.Helper()
	tmpl, err := Parse(src)
	if err != nil {
		t.Fatalf("Parse(%q): %v", src, err)
	}
	return tmpl
}

func TestSyntaxErrors(t *testing.T) {
	cases := []struct {
		src  string
		want string
	}{
		{`{% for m in messages %}{{ m.content }}`, "unclosed for"},
		{`{% if add_generation_prompt %}x`, "unclosed if"},
		{`{{ messages[0].content `, "unclosed expression"},
		{"line one\n{% frobnicate %}", "line 2"},
		{`{% for in messages %}{% endfor %}`, "for"},
	}
	for _, tc := range cases {
		tmpl, err := Parse(tc.src)
		if err == nil {
			t.Errorf("Parse(%q) succeeded, want an error", tc.src)
			continue
		}
		if tmpl != nil || !strings.HasPrefix(err.Error(), "parse chat template: ") || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Parse(%q) = (%v, %q), want nil and an error mentioning %q", tc.src, tmpl, err, tc.want)
		}
	}
}

func TestNegativeRepeatIsEmpty(t *testing.T) {
	// Python repeats a string a negative number of times into "".
	out, err := mustParse(t, `[{{ 'ab' * -1 }}]`).Render(noSystem, true, "", "")
	if err != nil || out != "[]" {
		t.Fatalf("Render = (%q, %v), want \"[]\"", out, err)
	}
}

// A template is data from a model file: none can crash the process (Go's
// stack overflow is fatal, not a panic), hang it or exhaust its memory.
// Each of these fails with an error that names the limit, quickly.
func TestHostileTemplatesFail(t *testing.T) {
	for name, src := range map[string]string{
		"self-referencing namespace": `{% set ns = namespace(x=0) %}{% set ns.x = ns %}{{ ns.x }}`,
		"self-containing list":       `{% set l = [1] %}{% set _ = l.append(l) %}{{ l }}`,
		"self-containing list json":  `{% set l = [1] %}{% set _ = l.append(l) %}{{ l | tojson }}`,
		"self-containing comparison": `{% set l = [1] %}{% set _ = l.append(l) %}{{ l == l }}`,
		"recursive macro":            `{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}`,
		"loop of 10^9":               `{% for i in range(1000000000) %}x{% endfor %}`,
		"nested loops of 10^9":       `{% for a in range(40000) %}{% for b in range(40000) %}{% endfor %}{% endfor %}`,
		"string of 10^9 bytes":       `{{ 'x' * 1000000000 }}`,
		"doubling string":            `{% set s = 'xxxxxxxx' %}{% for i in range(40) %}{% set s = s ~ s %}{% endfor %}{{ s | length }}`,
		"doubling list":              `{% set l = [1] %}{% for i in range(40) %}{% set l = l + l %}{% endfor %}{{ l | length }}`,
		"amplifying replace":         `{{ ('x' * 100000) | replace('x', 'y' * 100000) }}`,
		"amplifying indent":          `{{ ('\n' * 100000) | indent(100000) }}`,
	} {
		t.Run(name, func(t *testing.T) {
			tmpl := mustParse(t, src)
			out, err := tmpl.Render(noSystem, true, "", "")
			if !errors.Is(err, jinja.ErrLimit) || out != "" {
				t.Fatalf("Render = (%d bytes, %v), want an error wrapping jinja.ErrLimit", len(out), err)
			}
		})
	}
}

func TestFallback(t *testing.T) {
	for name, src := range map[string]string{"empty": "", "whitespace": " \n\t", "explicit": FallbackTemplate} {
		t.Run(name, func(t *testing.T) {
			testFallback(t, mustParse(t, src))
		})
	}
}

func testFallback(t *testing.T, tmpl *Template) {
	msgs := []Message{{Role: "system", Content: "You are terse."}, {Role: "user", Content: "Hello!"}, {Role: "assistant", Content: "Hi."}, {Role: "user", Content: "Bye?"}}
	cases := []struct {
		msgs   []Message
		addGen bool
		want   string
	}{
		{msgs, true, "system: You are terse.\n\nuser: Hello!\n\nassistant: Hi.\n\nuser: Bye?\n\nassistant:"},
		{msgs, false, "system: You are terse.\n\nuser: Hello!\n\nassistant: Hi.\n\nuser: Bye?\n\n"},
		{[]Message{{Role: "user", Content: "Once upon a time"}}, true, "user: Once upon a time\n\nassistant:"},
		{nil, true, "assistant:"},
		{nil, false, ""},
	}
	for _, tc := range cases {
		// Special tokens are left to the tokenizer.
		got, err := tmpl.Render(tc.msgs, tc.addGen, "<s>", "</s>")
		if err != nil || got != tc.want {
			t.Errorf("fallback with %d messages, add_generation_prompt=%v = (%q, %v), want %q", len(tc.msgs), tc.addGen, got, err, tc.want)
		}
	}
}

func TestContentIsNotInterpreted(t *testing.T) {
	tmpl := parseFile(t, "qwen2.5-instruct")
	msgs := []Message{{Role: "user", Content: `{{ bos_token }} {% if true %}<b>&"'</b>{% endif %} 日本語`}}
	got, err := tmpl.Render(msgs, false, "<s>", "</s>")
	if err != nil {
		t.Fatal(err)
	}
	want := "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n" +
		"<|im_start|>user\n" + msgs[0].Content + "<|im_end|>\n"
	if got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}

func TestStrftimeNow(t *testing.T) {
	tmpl := mustParse(t, `{{ strftime_now('%Y-%m-%d') }}`)
	before := time.Now().Format("2006-01-02")
	got, err := tmpl.Render(nil, false, "", "")
	after := time.Now().Format("2006-01-02")
	if err != nil || (got != before && got != after) {
		t.Fatalf("strftime_now = (%q, %v), want %q", got, err, after)
	}
}

func TestRange(t *testing.T) {
	cases := []struct {
		src, want string
	}{
		{`{% for i in range(3) %}{{ i }}{% endfor %}`, "012"},
		{`{% for i in range(1, 10, 3) %}{{ i }}{% endfor %}`, "147"},
		{`{% for i in range(5, 0, -2) %}{{ i }}{% endfor %}`, "531"},
		{`{% for i in range(2, 2) %}{{ i }}{% endfor %}.`, "."},
		{`{{ range(messages|length)|list|length }}`, "3"},
		{`{% for i in range(-9223372036854775807, 9223372036854775807, 9223372036854775807) %}{{ i }},{% endfor %}`,
			"-9223372036854775807,0,"},
	}
	for _, tc := range cases {
		got, err := mustParse(t, tc.src).Render(noSystem, false, "", "")
		if err != nil || got != tc.want {
			t.Errorf("%s = (%q, %v), want %q", tc.src, got, err, tc.want)
		}
	}
	for _, src := range []string{
		`{{ range(100001)|length }}`,
		`{{ range(0, 9223372036854775807)|length }}`,
		`{{ range(1, 2, 0) }}`,
		`{{ range('a') }}`,
		`{{ range() }}`,
	} {
		got, err := mustParse(t, src).Render(noSystem, false, "", "")
		if err == nil || !strings.Contains(err.Error(), "range") {
			t.Errorf("%s = (%q, %v), want a range error", src, got, err)
		}
	}
}

func TestConcurrentRender(t *testing.T) {
	tmpl := parseFile(t, "llama3-instruct")
	want, err := tmpl.Render(noSystem, true, "<|begin_of_text|>", "<|eot_id|>")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan string, 8)
	for range 8 {
		wg.Go(func() {
			for range 50 {
				got, err := tmpl.Render(noSystem, true, "<|begin_of_text|>", "<|eot_id|>")
				if err != nil || got != want {
					errs <- got
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for got := range errs {
		t.Errorf("concurrent render gave %q", got)
	}
}

func FuzzParseRender(f *testing.F) {
	entries, err := os.ReadDir("testdata")
	if err != nil {
		f.Fatal(err)
	}
	for _, e := range entries {
		if filepath.Ext(e.Name()) != ".jinja" {
			continue
		}
		src, err := os.ReadFile(filepath.Join("testdata", e.Name()))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(string(src))
	}
	f.Add(FallbackTemplate)
	f.Add(`{% set ns = namespace(x=0) %}{% for m in messages|reverse %}{% set ns.x = ns.x + 1 %}{{ m.role|upper }}{% endfor %}{{ ns.x }}`)
	f.Add(`{{ messages[-1]['content'][1:3] | tojson }}{{ messages | map(attribute='role') | join(',') }}`)
	f.Add(`{%- if messages[0].role == 'system' -%}{{ messages[0].content | trim }}{%- endif -%}{{ 'x' if add_generation_prompt else 'y' }}`)
	f.Add(`{% set ns = namespace(x=0) %}{% set ns.x = ns %}{{ ns.x }}`)
	f.Add(`{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}`)
	f.Add(`{% set l = [1] %}{% set _ = l.append(l) %}{{ l | tojson }}{{ l == l }}`)
	f.Fuzz(func(t *testing.T, src string) {
		if len(src) > 4096 {
			return
		}
		tmpl, err := Parse(src)
		if err != nil {
			if tmpl != nil {
				t.Fatalf("Parse returned both a template and %v", err)
			}
			return
		}
		out, err := tmpl.Render(withSystem, true, "<s>", "</s>")
		if err != nil && out != "" {
			t.Fatalf("Render returned output %q with error %v", out, err)
		}
	})
}
