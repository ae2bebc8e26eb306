package api

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"
)

// Client talks to any node's API. It is the CLI's only door to the cluster.
// Given several endpoints (a node's links, or several nodes) it tries them in
// order until one answers, so the CLI keeps working when a link is down.
type Client struct {
	endpoints []string
	token     string
	hc        *http.Client
}

// NewClient returns a client for the given "host:port" endpoints. tlsConf
// must verify the server against the cluster CA.
func NewClient(endpoints []string, token string, tlsConf *tls.Config) *Client {
	tr := &http.Transport{
		TLSClientConfig:     tlsConf,
		ForceAttemptHTTP2:   true,
		TLSHandshakeTimeout: 3 * time.Second,
		MaxIdleConnsPerHost: 2,
	}
	return &Client{
		endpoints: endpoints,
		token:     token,
		hc:        &http.Client{Transport: tr, Timeout: 30 * time.Second},
	}
}

// Status returns the cluster status as the answering node sees it.
func (c *Client) Status(ctx context.Context) (Status, error) {
	return call[Status](ctx, c, http.MethodGet, "/v1/status", nil)
}

// Properties lists the cluster properties.
func (c *Client) Properties(ctx context.Context) ([]Property, error) {
	return call[[]Property](ctx, c, http.MethodGet, "/v1/properties", nil)
}

// Property returns one property, or an error with CodeNotFound.
func (c *Client) Property(ctx context.Context, name string) (Property, error) {
	return call[Property](ctx, c, http.MethodGet, "/v1/properties/"+url.PathEscape(name), nil)
}

// SetProperty sets a property; it returns once a quorum has committed it.
func (c *Client) SetProperty(ctx context.Context, name, value string) (WriteResult, error) {
	return call[WriteResult](ctx, c, http.MethodPut, "/v1/properties/"+url.PathEscape(name), setPropertyBody{Value: value})
}

// DeleteProperty removes a property; it returns once a quorum has committed it.
func (c *Client) DeleteProperty(ctx context.Context, name string) (WriteResult, error) {
	return call[WriteResult](ctx, c, http.MethodDelete, "/v1/properties/"+url.PathEscape(name), nil)
}

// Join asks the cluster to admit a node.
func (c *Client) Join(ctx context.Context, req JoinRequest) (JoinResponse, error) {
	return call[JoinResponse](ctx, c, http.MethodPost, "/v1/nodes", req)
}

// RemoveNode removes a node from the cluster.
func (c *Client) RemoveNode(ctx context.Context, name string) (WriteResult, error) {
	return call[WriteResult](ctx, c, http.MethodDelete, "/v1/nodes/"+url.PathEscape(name), nil)
}

// call sends one request and decodes the answer into a T: the one shape of
// every Client method.
func call[T any](ctx context.Context, c *Client, method, path string, in any) (T, error) {
	var out T
	err := c.do(ctx, method, path, in, &out)
	return out, err
}

// do sends one request, trying each endpoint in turn while the failure is a
// connection failure. An answer from a node, even an error, ends the search:
// retrying a write elsewhere could apply it twice.
func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	var body []byte
	if in != nil {
		var err error
		if body, err = json.Marshal(in); err != nil {
			return fmt.Errorf("encode request: %w", err)
		}
	}
	if len(c.endpoints) == 0 {
		return errors.New("api: no endpoints to reach the cluster")
	}
	var errs []error
	for _, ep := range c.endpoints {
		req, err := http.NewRequestWithContext(ctx, method, "https://"+ep+path, bytes.NewReader(body))
		if err != nil {
			return fmt.Errorf("build request: %w", err)
		}
		req.Header.Set("Authorization", "Bearer "+c.token)
		if in != nil {
			req.Header.Set("Content-Type", "application/json")
		}
		resp, err := c.hc.Do(req)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", ep, err))
			if ctx.Err() != nil {
				break
			}
			continue
		}
		return decodeResponse(resp, out)
	}
	return fmt.Errorf("api: no node answered: %w", errors.Join(errs...))
}

func decodeResponse(resp *http.Response, out any) error {
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("read response: %w", err)
	}
	if resp.StatusCode/100 != 2 {
		var e Error
		if json.Unmarshal(raw, &e) == nil && e.Message != "" {
			return &e
		}
		return Errorf(CodeInternal, "unexpected answer %s: %s", resp.Status, bytes.TrimSpace(raw))
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(raw, out); err != nil {
		return fmt.Errorf("decode response: %w", err)
	}
	return nil
}
