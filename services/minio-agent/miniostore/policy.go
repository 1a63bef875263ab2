package miniostore

import (
	"encoding/json"

	"github.com/tenantprov/tenantprov/pkg/events"
)

// Actions the tenant's canned policy grants: listing and location on its
// bucket, object read/write/delete and the multipart actions on its
// objects — nothing else (DESIGN.md §5). CreateMultipartUpload,
// UploadPart and CompleteMultipartUpload are authorised as s3:PutObject.
var (
	BucketActions = []string{"s3:GetBucketLocation", "s3:ListBucket", "s3:ListBucketMultipartUploads"}
	ObjectActions = []string{"s3:AbortMultipartUpload", "s3:DeleteObject", "s3:GetObject", "s3:ListMultipartUploadParts", "s3:PutObject"}
)

// policyDocument is an IAM policy in the JSON form MinIO accepts.
type policyDocument struct {
	Version   string            `json:"Version"`
	Statement []policyStatement `json:"Statement"`
}

type policyStatement struct {
	Effect   string   `json:"Effect"`
	Action   []string `json:"Action"`
	Resource []string `json:"Resource"`
}

// TenantPolicy returns the canned policy tenant-<id>-rw: BucketActions on
// arn:aws:s3:::tenant-<id> and ObjectActions on arn:aws:s3:::tenant-<id>/*.
func TenantPolicy(tenant events.TenantID) []byte {
	arn := "arn:aws:s3:::" + tenant.MinIOBucket()
	doc := policyDocument{
		Version: "2012-10-17",
		Statement: []policyStatement{
			{Effect: "Allow", Action: BucketActions, Resource: []string{arn}},
			{Effect: "Allow", Action: ObjectActions, Resource: []string{arn + "/*"}},
		},
	}
	b, err := json.Marshal(doc)
	if err != nil {
		panic(err) // a fixed struct of strings always marshals
	}
	return b
}
