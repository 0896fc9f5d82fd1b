package schemas

import (
	"errors"
	"fmt"
	"net/http"
)

// Code is a stable error code: it travels on the wire, appears in HTTP
// responses and in the NATS micro error header, and never changes meaning.
type Code string

// The codes. Each has one HTTP status in httpStatus.
const (
	CodeInvalidRequest   Code = "invalid_request"
	CodeModelNotFound    Code = "model_not_found"
	CodeNoCapacity       Code = "no_capacity"
	CodeContextExceeded  Code = "context_length_exceeded"
	CodeCancelled        Code = "cancelled"
	CodeTimeout          Code = "timeout"
	CodeWorkerShutdown   Code = "worker_shutdown"
	CodeEngineFailure    Code = "engine_failure"
	CodeTemplateError    Code = "template_error"
	CodeBusUnavailable   Code = "bus_unavailable"
	CodeInternal         Code = "internal_error"
	CodeMethodNotAllowed Code = "method_not_allowed"
	CodeNotFound         Code = "not_found"
	// CodeDeadlineExceeded: the job's deadline passed, queued or running.
	CodeDeadlineExceeded Code = "deadline_exceeded"
	// CodeQueueFull: the model's queue holds as many jobs as it may; retry
	// after the Retry-After the answer gives.
	CodeQueueFull Code = "queue_full"
	// CodeFenced: a newer delivery of the job took it over from this worker.
	CodeFenced Code = "fenced"
	// CodeShuttingDown: the component answering is stopping; another may
	// take the request.
	CodeShuttingDown Code = "shutting_down"
	// CodeDeadLettered: the job was delivered as often as the jobs
	// consumer allows without ending (its workers died on it), or could not
	// be read; it is kept in the dead-letter stream for an operator.
	CodeDeadLettered Code = "dead_lettered"
	// The preflight's refusals to start a worker, spelt as operators know
	// them: the machine lacks memory, GPU memory or disk for the model, or
	// runs as many workers as it may. Another hive may have room.
	CodeInsufficientRAM  Code = "INSUFFICIENT_RAM"
	CodeInsufficientVRAM Code = "INSUFFICIENT_VRAM"
	CodeInsufficientDisk Code = "INSUFFICIENT_DISK"
	CodeTooManyWorkers   Code = "TOO_MANY_WORKERS"
	// CodeInvalidAPIKey: no API key, an unknown one or an expired one
	// (OpenAI's code for the same).
	CodeInvalidAPIKey Code = "invalid_api_key"
	// CodeForbidden: the API key may not use what the request asks for
	// (a model outside its scope).
	CodeForbidden Code = "forbidden"
	// CodeRateLimited: the API key is past its rate; retry after the
	// Retry-After the answer gives (OpenAI's code for the same).
	CodeRateLimited Code = "rate_limit_exceeded"
	// CodeTooLarge: the request body is larger than the queen reads.
	CodeTooLarge Code = "request_too_large"
	// CodeUnsupportedSchema: a response format's JSON Schema uses what rbee
	// cannot guarantee (the message names the keyword); it is refused
	// rather than honoured in part.
	CodeUnsupportedSchema Code = "unsupported_schema"
	// CodeUnsupportedParameter: the request sets a field rbee knows but
	// cannot honour (echo, suffix, an Ollama option set per worker); the
	// message names it. It is refused rather than ignored.
	CodeUnsupportedParameter Code = "unsupported_parameter"
)

var httpStatus = map[Code]int{
	CodeInvalidRequest:       http.StatusBadRequest,
	CodeModelNotFound:        http.StatusNotFound,
	CodeNoCapacity:           http.StatusServiceUnavailable,
	CodeContextExceeded:      http.StatusBadRequest,
	CodeCancelled:            499,
	CodeTimeout:              http.StatusGatewayTimeout,
	CodeWorkerShutdown:       http.StatusServiceUnavailable,
	CodeEngineFailure:        http.StatusInternalServerError,
	CodeTemplateError:        http.StatusBadRequest,
	CodeBusUnavailable:       http.StatusServiceUnavailable,
	CodeInternal:             http.StatusInternalServerError,
	CodeMethodNotAllowed:     http.StatusMethodNotAllowed,
	CodeNotFound:             http.StatusNotFound,
	CodeDeadlineExceeded:     http.StatusGatewayTimeout,
	CodeQueueFull:            http.StatusTooManyRequests,
	CodeFenced:               http.StatusConflict,
	CodeShuttingDown:         http.StatusServiceUnavailable,
	CodeDeadLettered:         http.StatusInternalServerError,
	CodeInsufficientRAM:      http.StatusInsufficientStorage,
	CodeInsufficientVRAM:     http.StatusInsufficientStorage,
	CodeInsufficientDisk:     http.StatusInsufficientStorage,
	CodeTooManyWorkers:       http.StatusServiceUnavailable,
	CodeInvalidAPIKey:        http.StatusUnauthorized,
	CodeForbidden:            http.StatusForbidden,
	CodeRateLimited:          http.StatusTooManyRequests,
	CodeTooLarge:             http.StatusRequestEntityTooLarge,
	CodeUnsupportedSchema:    http.StatusBadRequest,
	CodeUnsupportedParameter: http.StatusBadRequest,
}

// retryable lists the codes for which the same request may succeed later:
// the failure was the system's state, not the request.
var retryable = map[Code]bool{
	CodeNoCapacity: true, CodeTimeout: true, CodeWorkerShutdown: true, CodeBusUnavailable: true,
	CodeQueueFull: true, CodeModelNotFound: true, CodeInternal: true, CodeFenced: true, CodeShuttingDown: true,
	CodeRateLimited:     true,
	CodeInsufficientRAM: true, CodeInsufficientVRAM: true, CodeInsufficientDisk: true, CodeTooManyWorkers: true,
}

// Retryable reports whether sending the same request again may succeed.
func (c Code) Retryable() bool { return retryable[c] }

// HTTPStatus is the status an HTTP response with this code carries.
func (c Code) HTTPStatus() int {
	if s, ok := httpStatus[c]; ok {
		return s
	}
	return http.StatusInternalServerError
}

// Error is an error with a stable code, as it travels on the wire:
// {"code":"model_not_found","message":"...","retryable":true}.
type Error struct {
	Code    Code   `json:"code"`
	Message string `json:"message"`
	// Retryable says whether the same request may succeed later (Code's
	// Retryable); readers may rely on the code alone.
	Retryable bool `json:"retryable,omitempty"`

	cause error // what the error wraps, if anything; it does not travel
}

func (e *Error) Error() string { return fmt.Sprintf("%s: %s", e.Code, e.Message) }

// Unwrap returns the error Wrap was given.
func (e *Error) Unwrap() error { return e.cause }

// Wrap gives err a stable code, its message err's: errors.Is and errors.As
// still find what caused it (a context's end, say).
func Wrap(code Code, err error) *Error {
	return &Error{Code: code, Message: err.Error(), Retryable: code.Retryable(), cause: err}
}

// Errorf makes an *Error with a formatted message.
func Errorf(code Code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...), Retryable: code.Retryable()}
}

// CodeOf returns the code of the first *Error in err's chain, or CodeInternal.
func CodeOf(err error) Code {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return CodeInternal
}

// ErrorResponse is the body of every error answer, HTTP or NATS:
// {"error":{"code":"...","message":"..."}}.
type ErrorResponse struct {
	Error Error `json:"error"`
}
