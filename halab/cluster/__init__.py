"""The cluster as seen from outside: the declared cluster templated from the inventory
and its secrets (declared), crm_mon's state, health and fence history (crm), the
operator's first look (status), Keystone's API (keystone), the bundle of records for a
failure (collect) and the watch for secrets in process arguments (argv). Built on the
lab layer; knows nothing of faults or measurements."""
