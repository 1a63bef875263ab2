package miniostore

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/minio/madmin-go/v3"
	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/tenantprov/tenantprov/pkg/agent"
	"github.com/tenantprov/tenantprov/pkg/events"
	"github.com/tenantprov/tenantprov/pkg/secret"
)

// errNoCredential reports a VerifyRequest without the tenant's keys.
var errNoCredential = errors.New("credential has no access_key or secret_key")

// probePrefix starts the names of everything Verify writes or tries to
// create; it is in the reserved namespace, so it never collides with a
// tenant's data or resources.
const probePrefix = events.ReservedPrefix + "-probe-"

// propagationWait bounds how long own_access retries a freshly created
// user that a server of a multi-node deployment does not know yet. (MinIO
// notifies its peers before AddUser returns, so this is a safety margin,
// and it is what Verify of a removed user costs.)
const propagationWait = time.Second

// Verify checks the tenant's credential against the agent's endpoint (not
// the public one, which the agent may not reach):
//
//   - own_access: a probe object is put, read back and deleted in the
//     tenant's bucket;
//   - canary_denied: listing and reading the canary bucket, writing into
//     it, listing the system bucket (another bucket) and creating a
//     bucket are all refused with AccessDenied;
//   - wrong_password_refused: the same access key with a wrong secret is
//     refused (SignatureDoesNotMatch or InvalidAccessKeyId);
//   - admin_denied: admin API calls (server info, list users, add a
//     policy) are refused with AccessDenied.
//
// Anything a probe wrongly managed to create is removed with the admin
// credential. An error is returned only if MinIO could not be reached.
func (s *Store) Verify(ctx context.Context, req agent.VerifyRequest) (agent.VerifyResponse, error) {
	t := req.Tenant
	access, key := req.Credential.String(CredAccessKey), req.Credential.Secret(CredSecretKey)
	if access == "" || key.IsZero() {
		return agent.VerifyResponse{}, agent.Permanent(events.ReasonInvalid, errNoCredential)
	}
	if err := s.ensureSystem(ctx); err != nil {
		return agent.VerifyResponse{}, err
	}
	tenant, err := s.tenantS3(access, key.Reveal())
	if err != nil {
		return agent.VerifyResponse{}, err
	}
	wrong, err := s.tenantS3(access, tamper(key).Reveal())
	if err != nil {
		return agent.VerifyResponse{}, err
	}
	tenantAdmin, err := madmin.NewWithOptions(s.cfg.Endpoint, &madmin.Options{
		Creds: credentials.NewStaticV4(access, key.Reveal(), ""), Secure: s.cfg.Secure, Transport: s.transport,
	})
	if err != nil {
		return agent.VerifyResponse{}, fmt.Errorf("tenant admin client: %w", err)
	}

	checks := make([]events.Check, 4)
	err = s.steps(ctx,
		func(ctx context.Context) (err error) { checks[0], err = s.checkOwnAccess(ctx, tenant, t); return err },
		func(ctx context.Context) (err error) { checks[1], err = s.checkCanaryDenied(ctx, tenant); return err },
		func(ctx context.Context) (err error) {
			checks[2], err = s.checkWrongPassword(ctx, wrong, t)
			return err
		},
		func(ctx context.Context) (err error) {
			checks[3], err = s.checkAdminDenied(ctx, tenantAdmin)
			return err
		},
	)
	if err != nil {
		return agent.VerifyResponse{}, err
	}
	return agent.VerifyResponse{Checks: checks}, nil
}

// tenantS3 is an S3 client with a tenant's keys, on the agent's endpoint.
func (s *Store) tenantS3(access, key string) (*minio.Client, error) {
	c, err := minio.New(s.cfg.Endpoint, &minio.Options{
		Creds:     credentials.NewStaticV4(access, key, ""),
		Secure:    s.cfg.Secure,
		Region:    s.serverRegion(),
		Transport: s.transport,
	})
	if err != nil {
		return nil, fmt.Errorf("tenant client: %w", err)
	}
	return c, nil
}

// tamper returns a secret of the same length that differs in its last
// character.
func tamper(k secret.String) secret.String {
	b := []byte(k.Reveal())
	if b[len(b)-1] == 'A' {
		b[len(b)-1] = 'B'
	} else {
		b[len(b)-1] = 'A'
	}
	return secret.String(b)
}

func (s *Store) checkOwnAccess(ctx context.Context, c *minio.Client, t events.TenantID) (events.Check, error) {
	check := events.Check{Name: agent.CheckOwnAccess}
	bucket := t.MinIOBucket()
	obj := "tenantprov-probe/" + randomHex(8)
	payload := []byte("tenantprov verification probe " + obj)
	fail := func(step string, err error) (events.Check, error) {
		if err != nil && !answered(err) {
			return check, fmt.Errorf("own access: %s: %w", step, err)
		}
		check.Detail = fmt.Sprintf("%s %s/%s: %s", step, bucket, obj, describe(err))
		return check, nil
	}
	err := s.call(ctx, "verify.own_put", func(ctx context.Context) error {
		deadline := time.Now().Add(propagationWait)
		for {
			_, err := c.PutObject(ctx, bucket, obj, bytes.NewReader(payload), int64(len(payload)),
				minio.PutObjectOptions{DisableMultipart: true})
			if s3Code(err) != codeInvalidAccessKeyID || time.Now().After(deadline) {
				return err
			}
			select { // a new user not yet known to this server
			case <-ctx.Done():
				return err
			case <-time.After(100 * time.Millisecond):
			}
		}
	})
	if err != nil {
		return fail("put", err)
	}
	var got []byte
	err = s.call(ctx, "verify.own_get", func(ctx context.Context) error {
		o, err := c.GetObject(ctx, bucket, obj, minio.GetObjectOptions{})
		if err != nil {
			return err
		}
		defer o.Close()
		got, err = io.ReadAll(io.LimitReader(o, 1<<16))
		return err
	})
	if err != nil {
		return fail("get", err)
	}
	err = s.call(ctx, "verify.own_delete", func(ctx context.Context) error {
		return c.RemoveObject(ctx, bucket, obj, minio.RemoveObjectOptions{})
	})
	if err != nil {
		return fail("delete", err)
	}
	if !bytes.Equal(got, payload) {
		check.Detail = fmt.Sprintf("get %s/%s returned %d bytes that differ from the %d put", bucket, obj, len(got), len(payload))
		return check, nil
	}
	check.Passed = true
	check.Detail = "put, get and delete of a probe object in " + bucket
	return check, nil
}

// denialProbe is one operation a tenant credential must be refused.
type denialProbe struct {
	what string
	run  func(ctx context.Context) error
	// undo removes what the operation created if it was wrongly allowed.
	undo func(ctx context.Context)
}

func (s *Store) checkCanaryDenied(ctx context.Context, c *minio.Client) (events.Check, error) {
	probeObj := probePrefix + randomHex(8)
	probeBucket := probePrefix + randomHex(8)
	probes := []denialProbe{
		{what: "list " + events.CanaryBucket, run: func(ctx context.Context) error {
			return firstListError(ctx, c, events.CanaryBucket)
		}},
		{what: "get " + events.CanaryBucket + "/" + canaryObject, run: func(ctx context.Context) error {
			o, err := c.GetObject(ctx, events.CanaryBucket, canaryObject, minio.GetObjectOptions{})
			if err != nil {
				return err
			}
			defer o.Close()
			_, err = o.Stat()
			return err
		}},
		{what: "put into " + events.CanaryBucket, run: func(ctx context.Context) error {
			_, err := c.PutObject(ctx, events.CanaryBucket, probeObj, strings.NewReader("x"), 1, minio.PutObjectOptions{DisableMultipart: true})
			return err
		}, undo: func(ctx context.Context) {
			_ = s.s3.RemoveObject(ctx, events.CanaryBucket, probeObj, minio.RemoveObjectOptions{})
		}},
		{what: "list " + SystemBucket + " (another bucket)", run: func(ctx context.Context) error {
			return firstListError(ctx, c, SystemBucket)
		}},
		{what: "create bucket " + probeBucket, run: func(ctx context.Context) error {
			return c.MakeBucket(ctx, probeBucket, minio.MakeBucketOptions{Region: s.serverRegion()})
		}, undo: func(ctx context.Context) {
			_ = s.s3.RemoveBucketWithOptions(ctx, probeBucket, minio.RemoveBucketOptions{ForceDelete: true})
		}},
	}
	return s.denials(ctx, agent.CheckCanaryDenied, "verify.canary_denied", probes)
}

func (s *Store) checkAdminDenied(ctx context.Context, c *madmin.AdminClient) (events.Check, error) {
	probePolicy := probePrefix + randomHex(8)
	probes := []denialProbe{
		{what: "admin server info", run: func(ctx context.Context) error {
			_, err := c.ServerInfo(ctx)
			return err
		}},
		{what: "admin list users", run: func(ctx context.Context) error {
			_, err := c.ListUsers(ctx)
			return err
		}},
		{what: "admin add policy", run: func(ctx context.Context) error {
			return c.AddCannedPolicy(ctx, probePolicy, []byte(`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["s3:GetObject"],"Resource":["arn:aws:s3:::`+events.CanaryBucket+`/*"]}]}`))
		}, undo: func(ctx context.Context) {
			_ = s.admin.RemoveCannedPolicy(ctx, probePolicy)
		}},
	}
	return s.denials(ctx, agent.CheckAdminDenied, "verify.admin_denied", probes)
}

// denials runs probes and passes the check only if every one was refused
// with AccessDenied.
func (s *Store) denials(ctx context.Context, name, call string, probes []denialProbe) (events.Check, error) {
	check := events.Check{Name: name}
	var denied, allowed []string
	err := s.call(ctx, call, func(ctx context.Context) error {
		for _, p := range probes {
			err := p.run(ctx)
			switch {
			case err == nil:
				allowed = append(allowed, p.what+": allowed")
				if p.undo != nil {
					p.undo(context.WithoutCancel(ctx))
				}
			case !answered(err):
				return fmt.Errorf("%s: %w", p.what, err)
			case s3Code(err) == codeAccessDenied || adminCode(err) == codeAccessDenied:
				denied = append(denied, p.what)
			default:
				allowed = append(allowed, p.what+": "+describe(err)+" instead of AccessDenied")
			}
		}
		return nil
	})
	if err != nil {
		return check, fmt.Errorf("%s: %w", name, err)
	}
	if len(allowed) > 0 {
		check.Detail = "not denied: " + strings.Join(allowed, "; ")
		return check, nil
	}
	check.Passed = true
	check.Detail = "denied: " + strings.Join(denied, ", ")
	return check, nil
}

func (s *Store) checkWrongPassword(ctx context.Context, c *minio.Client, t events.TenantID) (events.Check, error) {
	check := events.Check{Name: agent.CheckWrongPasswordRefused}
	var err error
	_ = s.call(ctx, "verify.wrong_password", func(ctx context.Context) error {
		err = firstListError(ctx, c, t.MinIOBucket())
		return err
	})
	switch code := s3Code(err); {
	case err == nil:
		check.Detail = "listing " + t.MinIOBucket() + " with a wrong secret succeeded"
	case !answered(err):
		return check, fmt.Errorf("wrong password: %w", err)
	case code == codeSignatureDoesNotMatch || code == codeInvalidAccessKeyID:
		check.Passed = true
		check.Detail = "a wrong secret was refused: " + code
	default:
		check.Detail = "a wrong secret got " + describe(err) + " instead of SignatureDoesNotMatch"
	}
	return check, nil
}

// firstListError lists at most one key of bucket and returns the error, if
// any.
func firstListError(ctx context.Context, c *minio.Client, bucket string) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	o := <-c.ListObjects(ctx, bucket, minio.ListObjectsOptions{MaxKeys: 1})
	return o.Err
}

// describe names an error by its S3/admin code where it has one.
func describe(err error) string {
	if c := s3Code(err); c != "" {
		return c
	}
	if c := adminCode(err); c != "" {
		return c
	}
	return err.Error()
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
