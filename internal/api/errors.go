package api

import (
	"errors"
	"fmt"
	"net/http"
)

// Error codes: stable words that scripts may match on.
const (
	CodeUnauthorized = "unauthorized"
	CodeNoQuorum     = "no_quorum"
	CodeNoLeader     = "no_leader"
	CodeBadRequest   = "bad_request"
	CodeNotFound     = "not_found"
	CodeConflict     = "conflict"
	CodeTimeout      = "timeout"
	CodeInternal     = "internal"
)

// Error implements error so that a Backend can say precisely what went wrong
// and the CLI can print the same words.
func (e *Error) Error() string { return e.Message }

// Errorf builds an *Error with a code.
func Errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// IsCode reports whether err is an *Error with the given code.
func IsCode(err error, code string) bool {
	var e *Error
	return errors.As(err, &e) && e.Code == code
}

func httpStatus(code string) int {
	switch code {
	case CodeUnauthorized:
		return http.StatusUnauthorized
	case CodeNoQuorum, CodeNoLeader:
		return http.StatusServiceUnavailable
	case CodeBadRequest:
		return http.StatusBadRequest
	case CodeNotFound:
		return http.StatusNotFound
	case CodeConflict:
		return http.StatusConflict
	case CodeTimeout:
		return http.StatusGatewayTimeout
	default:
		return http.StatusInternalServerError
	}
}
