package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"

	"github.com/rbee-dev/rbee/internal/apikey"
	"github.com/rbee-dev/rbee/schemas"
)

// httpFlags let a client command talk to a queen's HTTP API, with an API
// key, instead of NATS.
type httpFlags struct {
	queen   *string
	keyFile *string
}

func addHTTPFlags(fs *flag.FlagSet) *httpFlags {
	return &httpFlags{
		queen: fs.String("queen", os.Getenv("RBEE_QUEEN"), "use the queen's HTTP API at this URL (http://127.0.0.1:8080) instead of NATS (env RBEE_QUEEN)"),
		keyFile: fs.String("api-key-file", os.Getenv("RBEE_API_KEY_FILE"),
			"file holding the API key sent to the queen, mode 0600 (env RBEE_API_KEY_FILE; or RBEE_API_KEY holds the key itself)"),
	}
}

// key is the API key to send: from the key file, else RBEE_API_KEY, else
// none (a queen on loopback without keys needs none).
func (h *httpFlags) key() (string, error) {
	if *h.keyFile != "" {
		return apikey.ReadSecret(*h.keyFile)
	}
	return os.Getenv("RBEE_API_KEY"), nil
}

// do sends a request to the queen. An answer other than 2xx is an error
// with the queen's code and message.
func (h *httpFlags) do(ctx context.Context, method, path string, body any) (*http.Response, error) {
	key, err := h.key()
	if err != nil {
		return nil, err
	}
	var r io.Reader
	if body != nil {
		data, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		r = bytes.NewReader(data)
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimSuffix(*h.queen, "/")+path, r)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode/100 == 2 {
		return resp, nil
	}
	defer resp.Body.Close()
	var e schemas.ErrorResponse
	if json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&e) != nil || e.Error.Code == "" {
		return nil, fmt.Errorf("%s %s: %s", method, path, resp.Status)
	}
	return nil, fmt.Errorf("%s %s: %s: %w", method, path, resp.Status, &e.Error)
}

// runHTTP streams req's answer from the queen's completions endpoints.
func runHTTP(ctx context.Context, h *httpFlags, req schemas.InferRequest, stdout io.Writer) error {
	body := map[string]any{"model": req.Model, "max_tokens": req.MaxTokens, "stream": true}
	if req.Temperature != nil {
		body["temperature"] = *req.Temperature
	}
	path := "/v1/completions"
	if len(req.Messages) > 0 {
		path, body["messages"] = "/v1/chat/completions", req.Messages
	} else {
		body["prompt"] = req.Prompt
	}
	resp, err := h.do(ctx, http.MethodPost, path, body)
	if err != nil {
		return fmt.Errorf("run: %w", err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		data, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok {
			continue
		}
		if data == "[DONE]" {
			fmt.Fprintln(stdout)
			return nil
		}
		var chunk struct {
			Choices []struct {
				Text  string `json:"text"`
				Delta struct {
					Content string `json:"content"`
				} `json:"delta"`
			} `json:"choices"`
			Error *schemas.Error `json:"error"`
		}
		if err := json.Unmarshal([]byte(data), &chunk); err != nil {
			return fmt.Errorf("run: bad event: %w", err)
		}
		if chunk.Error != nil {
			fmt.Fprintln(stdout)
			return fmt.Errorf("run: %w", chunk.Error)
		}
		for _, c := range chunk.Choices {
			fmt.Fprint(stdout, c.Text+c.Delta.Content)
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("run: %w", err)
	}
	return errors.New("run: the stream ended without [DONE]")
}

// modelsHTTP lists the models the queen answers, as the key may see them.
func modelsHTTP(ctx context.Context, h *httpFlags, stdout io.Writer) error {
	resp, err := h.do(ctx, http.MethodGet, "/v1/models", nil)
	if err != nil {
		return fmt.Errorf("models: %w", err)
	}
	defer resp.Body.Close()
	var list struct {
		Data []struct {
			ID string `json:"id"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&list); err != nil {
		return fmt.Errorf("models: %w", err)
	}
	fmt.Fprintln(stdout, "MODEL")
	for _, m := range list.Data {
		fmt.Fprintln(stdout, m.ID)
	}
	return nil
}
