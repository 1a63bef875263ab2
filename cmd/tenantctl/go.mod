module github.com/tenantprov/tenantprov/cmd/tenantctl

go 1.26

replace github.com/tenantprov/tenantprov/pkg => ../../pkg
