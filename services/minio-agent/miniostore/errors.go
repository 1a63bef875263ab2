package miniostore

import (
	"errors"

	"github.com/minio/madmin-go/v3"
	"github.com/minio/minio-go/v7"
)

// ErrNotConfigured is returned by New for a configuration that does not
// pass Validate.
var ErrNotConfigured = errors.New("miniostore: invalid configuration")

// ErrStaleGeneration reports a command for an older generation of a tenant
// than the one tenantprov's markers record. Provision refuses it
// (permanently, reason invalid) rather than resetting the current
// generation's secret.
var ErrStaleGeneration = errors.New("stale generation")

// ErrCredentialRetired reports a Provision of a generation whose first
// credential (the user's secret) a rotation has retired: Provision would
// reset it to the provisioning password and revive it, so it refuses
// (permanently, reason invalid) and changes nothing.
var ErrCredentialRetired = errors.New("credential version 1 retired")

// S3 and admin API error codes the store acts on.
const (
	codeAccessDenied          = "AccessDenied"
	codeNoSuchBucket          = "NoSuchBucket"
	codeNoSuchKey             = "NoSuchKey"
	codeNoSuchTagSet          = "NoSuchTagSet"
	codeNoSuchUpload          = "NoSuchUpload"
	codeBucketOwnedByYou      = "BucketAlreadyOwnedByYou"
	codeBucketExists          = "BucketAlreadyExists"
	codeSignatureDoesNotMatch = "SignatureDoesNotMatch"
	codeInvalidAccessKeyID    = "InvalidAccessKeyId"
	codeAdminNoSuchUser       = "XMinioAdminNoSuchUser"
	codeAdminNoSuchPolicy     = "XMinioAdminNoSuchPolicy"
	codeAdminPolicyApplied    = "XMinioAdminPolicyChangeAlreadyApplied"
	codeAdminConfigBadJSON    = "XMinioAdminConfigBadJSON"
	codeAdminNoSuchAccessKey  = "XMinioAdminNoSuchAccessKey"
	codeIAMPolicyInUse        = "XMinioIAMPolicyInUse"
	codeNoSuchBucketPolicy    = "NoSuchBucketPolicy"
	// codeIAMActionNotAllowed is what the admin API answers a user call
	// (user info, status, removal) on an access key that is a service
	// account or temporary key, not a user: the name is squatted.
	codeIAMActionNotAllowed = "XMinioIAMActionNotAllowed"
	// codeInvalidIAMCredentials is what add-user answers for an access key
	// held by a service account or temporary key (and, with the same code,
	// service-account calls for a key that is not one).
	codeInvalidIAMCredentials = "XMinioInvalidIAMCredentials"
	// codeIAMServiceAccountNotAllowed is what add-service-account answers
	// for an access key that is already taken.
	codeIAMServiceAccountNotAllowed = "XMinioIAMServiceAccountNotAllowed"
)

// s3Code is the S3 error code of err ("" if it is not an S3 error
// response).
func s3Code(err error) string {
	if err == nil {
		return ""
	}
	var e minio.ErrorResponse
	if errors.As(err, &e) {
		return e.Code
	}
	return ""
}

// adminCode is the admin API error code of err ("" if it is not an admin
// error response).
func adminCode(err error) string {
	if err == nil {
		return ""
	}
	var e madmin.ErrorResponse
	if errors.As(err, &e) {
		return e.Code
	}
	return ""
}

// answered reports whether err is an error response from MinIO (S3 or
// admin API) rather than a transport failure: only then does it say
// anything about what the credential may do.
func answered(err error) bool {
	var s3e minio.ErrorResponse
	var adme madmin.ErrorResponse
	return errors.As(err, &s3e) || errors.As(err, &adme)
}
