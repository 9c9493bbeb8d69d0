/*
 * scsepol.c -- securecache's private libsepol.
 *
 * How this works: tools/build-policy links this file with the WHOLE static
 * libsepol.a into one shared library (build/lib/libsecurecache-sepol.so,
 * `-Wl,-Bsymbolic -Wl,--whole-archive`), so every libsepol function is
 * exported -- also those the system's libsepol.so.2 hides -- and binds to
 * this library's own copy of libsepol's global state (the security server's
 * policydb and SID table), never to another libsepol in the process.
 *
 * Python (securecache/security/sepol.py) calls libsepol's exported security
 * server directly for SIDs and access vectors (sepol_context_to_sid,
 * sepol_compute_av, ...) and the few functions below for what libsepol does
 * not offer or does differently from the kernel:
 *
 *   scs_open/scs_close  load a binary policy from memory into a fresh
 *                       policydb + SID table (libsepol's own loaders keep
 *                       one hidden global policy); several may be open
 *   scs_select          make one of them the security server's policy:
 *                       libsepol's sepol_* calls then work on it
 *   scs_bool_count, scs_bool_name, scs_get_bool: the policy's booleans
 *   scs_set_bool        set a boolean in the live policy; scs_commit_bools
 *                       re-evaluates the conditional rules, as the kernel's
 *                       security_set_bools does
 *   scs_compute_create  the kernel's security_compute_sid() for
 *                       AVTAB_TRANSITION (type_transition incl. name-based
 *                       rules, role_transition, range_transition and the
 *                       default_user/role/type/range statements), which
 *                       libsepol's sepol_transition_sid only partly does
 *   scs_name_rules      whether a name-based type_transition can apply to
 *                       a (source, target, class): if none can, a create
 *                       label does not depend on the name
 *   scs_permissive      the type's `typepermissive` flag
 *   scs_handle_unknown, scs_mls_enabled, scs_initial_context
 *   scs_sid_insert, scs_sid_remove  a SID table the caller bounds: it
 *                       numbers SIDs itself and frees them again, where
 *                       sepol_context_to_sid searches the whole table
 *                       linearly and never frees an entry
 *   scs_canonical       a context's canonical spelling, without a SID
 *
 * Not thread-safe, like libsepol's security server: the caller holds one
 * lock around scs_select and the calls that follow it.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <sepol/debug.h>
#include <sepol/policydb/avtab.h>
#include <sepol/policydb/conditional.h>
#include <sepol/policydb/context.h>
#include <sepol/policydb/hashtab.h>
#include <sepol/policydb/policydb.h>
#include <sepol/policydb/services.h>
#include <sepol/policydb/sidtab.h>

/* libsepol internals: in libsepol.a, not in the public headers. */
extern int context_to_string(sepol_handle_t *handle, const policydb_t *p,
			     const context_struct_t *c, char **result,
			     size_t *result_len);
extern int context_from_string(sepol_handle_t *handle, const policydb_t *p,
			       context_struct_t **cptr, const char *con_str,
			       size_t con_str_len);

/* One loaded policy: a policydb and its SID table. */
struct scs_policy {
	policydb_t *pdb;
	sidtab_t *sidtab;
};

/* The policy the calls below (and libsepol's security server) work on. */
static policydb_t *cur_pdb;
static sidtab_t *cur_sidtab;

/* Make `pol' the current policy, for scs_* and libsepol's sepol_* calls. */
void scs_select(struct scs_policy *pol)
{
	cur_pdb = pol ? pol->pdb : NULL;
	cur_sidtab = pol ? pol->sidtab : NULL;
	if (pol) {
		sepol_set_policydb(pol->pdb);
		sepol_set_sidtab(pol->sidtab);
	}
}

/* Free a policy opened by scs_open (never the selected one: select
 * another, or NULL, first). */
void scs_close(struct scs_policy *pol)
{
	if (!pol)
		return;
	if (cur_pdb == pol->pdb)
		scs_select(NULL);
	if (pol->sidtab) {
		sepol_sidtab_destroy(pol->sidtab);
		free(pol->sidtab);
	}
	if (pol->pdb) {
		policydb_destroy(pol->pdb);
		free(pol->pdb);
	}
	free(pol);
}

/* Read a binary (kernel) policy image into a new policy with an empty SID
 * table.  Returns NULL (and *err < 0) on failure.  Several policies may be
 * open at once; scs_select chooses the one calls work on. */
struct scs_policy *scs_open(const void *data, size_t len, int *err)
{
	struct policy_file pf;
	struct scs_policy *pol = calloc(1, sizeof(*pol));

	*err = -ENOMEM;
	if (!pol)
		return NULL;
	pol->pdb = calloc(1, sizeof(*pol->pdb));
	pol->sidtab = calloc(1, sizeof(*pol->sidtab));
	if (!pol->pdb || !pol->sidtab || policydb_init(pol->pdb)) {
		free(pol->pdb);
		free(pol->sidtab);
		free(pol);
		return NULL;
	}
	policy_file_init(&pf);
	pf.type = PF_USE_MEMORY;
	pf.data = (char *)data;
	pf.len = len;
	if (policydb_read(pol->pdb, &pf, 0) || pol->pdb->policy_type != POLICY_KERN ||
	    sepol_sidtab_init(pol->sidtab)) {
		free(pol->sidtab);
		pol->sidtab = NULL;
		scs_close(pol);
		*err = -EINVAL;
		return NULL;
	}
	*err = 0;
	return pol;
}

int scs_handle_unknown(void)
{
	return cur_pdb ? (int)cur_pdb->handle_unknown : -EINVAL;
}

int scs_mls_enabled(void)
{
	return cur_pdb ? cur_pdb->mls : -EINVAL;
}

int scs_policy_version(void)
{
	return cur_pdb ? (int)cur_pdb->policyvers : -EINVAL;
}

/* 1 if the source type of `ssid' is permissive (typepermissive), else 0. */
int scs_permissive(sepol_security_id_t ssid)
{
	context_struct_t *c;

	if (!cur_pdb)
		return -EINVAL;
	c = sepol_sidtab_search(cur_sidtab, ssid);
	if (!c)
		return -EINVAL;
	/* permissive_map is indexed by type value, not value - 1 */
	return ebitmap_get_bit(&cur_pdb->permissive_map, c->type);
}

static cond_bool_datum_t *find_bool(const char *name)
{
	if (!cur_pdb)
		return NULL;
	return hashtab_search(cur_pdb->p_bools.table, name);
}

int scs_get_bool(const char *name)
{
	cond_bool_datum_t *b = find_bool(name);

	return b ? (b->state ? 1 : 0) : -ENOENT;
}

int scs_set_bool(const char *name, int value)
{
	cond_bool_datum_t *b = find_bool(name);

	if (!b)
		return -ENOENT;
	b->state = value ? 1 : 0;
	return 0;
}

int scs_bool_count(void)
{
	return cur_pdb ? (int)cur_pdb->p_bools.nprim : -EINVAL;
}

/* The name of boolean `index' (0-based), owned by the policy. */
const char *scs_bool_name(uint32_t index)
{
	if (!cur_pdb || index >= cur_pdb->p_bools.nprim)
		return NULL;
	return cur_pdb->p_bool_val_to_name[index];
}

int scs_commit_bools(void)
{
	return cur_pdb ? evaluate_conds(cur_pdb) : -EINVAL;
}

/* The context of initial SID number `isid' (kernel numbering: unlabeled is
 * 3), as a string the caller frees with scs_free. */
int scs_initial_context(uint32_t isid, char **out, size_t *out_len)
{
	ocontext_t *c;

	if (!cur_pdb)
		return -EINVAL;
	for (c = cur_pdb->ocontexts[OCON_ISID]; c; c = c->next)
		if (c->sid[0] == isid)
			return context_to_string(NULL, cur_pdb, &c->context[0],
						 out, out_len);
	return -ENOENT;
}

void scs_free(void *p)
{
	free(p);
}

/* ------------------------------------------------------------ SIDs */

/* Parse `ctx' (`len' bytes) into a new context structure if it is valid
 * under the current policy; NULL otherwise.  Free with free_context. */
static context_struct_t *parse_context(const char *ctx, size_t len)
{
	context_struct_t *c = NULL;

	if (!cur_pdb || context_from_string(NULL, cur_pdb, &c, ctx, len) < 0)
		return NULL;
	return c;
}

static void free_context(context_struct_t *c)
{
	context_destroy(c);
	free(c);
}

/* Give the valid context `ctx' the SID `sid', which the caller chooses
 * from a range of its own, far above the numbers libsepol's allocator
 * hands out (and above the initial SIDs': libsepol maps a SID it cannot
 * find to the unlabeled initial SID's entry).  -EINVAL: not a valid
 * context; -EEXIST: `sid' is taken. */
int scs_sid_insert(const char *ctx, size_t len, sepol_security_id_t sid)
{
	context_struct_t *c = parse_context(ctx, len);
	unsigned int next_sid;
	int rc;

	if (!c)
		return -EINVAL;
	next_sid = cur_sidtab->next_sid;
	rc = sepol_sidtab_insert(cur_sidtab, sid, c);
	/* libsepol's own allocator (sepol_context_to_sid, transition_sid) goes
	 * on numbering from where it was, below the caller's range. */
	cur_sidtab->next_sid = next_sid;
	free_context(c);
	if (rc == -EEXIST || (rc < 0 && errno == EEXIST))
		return -EEXIST;
	return rc ? -ENOMEM : 0;
}

/* Free SID `sid' (inserted by scs_sid_insert).  -ENOENT if there is none. */
int scs_sid_remove(sepol_security_id_t sid)
{
	sidtab_node_t **link, *node;

	if (!cur_sidtab || !cur_sidtab->htable)
		return -EINVAL;
	link = &cur_sidtab->htable[sid & SIDTAB_HASH_MASK];
	while (*link && (*link)->sid < sid)
		link = &(*link)->next;
	node = *link;
	if (!node || node->sid != sid)
		return -ENOENT;
	*link = node->next;
	context_destroy(&node->context);
	free(node);
	cur_sidtab->nel--;
	return 0;
}

/* The canonical spelling of the valid context `ctx' (as sepol_sid_to_context
 * would give it), as a string the caller frees with scs_free. */
int scs_canonical(const char *ctx, size_t len, char **out, size_t *out_len)
{
	context_struct_t *c = parse_context(ctx, len);
	int rc;

	if (!c)
		return -EINVAL;
	rc = context_to_string(NULL, cur_pdb, c, out, out_len);
	free_context(c);
	return rc ? -EINVAL : 0;
}

/* ------------------------------------------------------------ create */

static uint32_t class_value(const char *name)
{
	class_datum_t *c = hashtab_search(cur_pdb->p_classes.table, name);

	return c ? c->s.value : 0;
}

/* The kernel decides this from its own class map; for a userspace object
 * manager a class is a socket class when its name says so. */
static int is_socket_class(uint32_t tclass)
{
	const char *name;
	size_t n;

	if (!tclass || tclass > cur_pdb->p_classes.nprim)
		return 0;
	name = cur_pdb->p_class_val_to_name[tclass - 1];
	n = strlen(name);
	return strcmp(name, "socket") == 0 ||
	       (n > 7 && strcmp(name + n - 7, "_socket") == 0);
}

static void default_user_role_type(const class_datum_t *cls, int proc_like,
				   const context_struct_t *s,
				   const context_struct_t *t,
				   context_struct_t *n)
{
	n->user = (cls && cls->default_user == DEFAULT_TARGET) ? t->user : s->user;

	if (cls && cls->default_role == DEFAULT_SOURCE)
		n->role = s->role;
	else if (cls && cls->default_role == DEFAULT_TARGET)
		n->role = t->role;
	else
		n->role = proc_like ? s->role : OBJECT_R_VAL;

	if (cls && cls->default_type == DEFAULT_SOURCE)
		n->type = s->type;
	else if (cls && cls->default_type == DEFAULT_TARGET)
		n->type = t->type;
	else
		n->type = proc_like ? s->type : t->type;
}

static void type_rule(const context_struct_t *s, const context_struct_t *t,
		      uint32_t tclass, context_struct_t *n)
{
	avtab_key_t key;
	avtab_ptr_t node;

	key.source_type = s->type;
	key.target_type = t->type;
	key.target_class = tclass;
	key.specified = AVTAB_TRANSITION;
	node = avtab_search_node(&cur_pdb->te_avtab, &key);
	if (!node) {
		for (node = avtab_search_node(&cur_pdb->te_cond_avtab, &key);
		     node; node = avtab_search_node_next(node, AVTAB_TRANSITION))
			if (node->key.specified & AVTAB_ENABLED)
				break;
	}
	if (node)
		n->type = node->datum.data;
}

static void filename_rule(const context_struct_t *s, const context_struct_t *t,
			  uint32_t tclass, const char *name, context_struct_t *n)
{
	filename_trans_key_t key;
	filename_trans_datum_t *d;

	if (!name || !cur_pdb->filename_trans)
		return;
	key.ttype = t->type;
	key.tclass = tclass;
	key.name = (char *)name;
	for (d = hashtab_search(cur_pdb->filename_trans, (hashtab_key_t)&key);
	     d; d = d->next) {
		if (ebitmap_get_bit(&d->stypes, s->type - 1)) {
			n->type = d->otype;
			return;
		}
	}
}

struct name_rule_query {
	uint32_t stype, ttype, tclass;
};

static int name_rule_applies(hashtab_key_t k, hashtab_datum_t d, void *args)
{
	const filename_trans_key_t *key = (const filename_trans_key_t *)k;
	const struct name_rule_query *q = args;
	const filename_trans_datum_t *datum;

	if (key->ttype != q->ttype || key->tclass != q->tclass)
		return 0;
	for (datum = d; datum; datum = datum->next)
		if (ebitmap_get_bit(&datum->stypes, q->stype - 1))
			return 1;
	return 0;
}

/*
 * 1 if a name-based type_transition could apply to an object of class
 * `tclass' that `ssid' creates in `tsid' (its label may then depend on the
 * object's name), 0 if none can (the label is the same for every name),
 * -EINVAL for an unknown SID.  It walks every name-based rule: the caller
 * remembers the answer.
 */
int scs_name_rules(sepol_security_id_t ssid, sepol_security_id_t tsid,
		   uint32_t tclass)
{
	context_struct_t *s, *t;
	struct name_rule_query q;

	if (!cur_pdb)
		return -EINVAL;
	s = sepol_sidtab_search(cur_sidtab, ssid);
	t = sepol_sidtab_search(cur_sidtab, tsid);
	if (!s || !t)
		return -EINVAL;
	if (!cur_pdb->filename_trans)
		return 0;
	q.stype = s->type;
	q.ttype = t->type;
	q.tclass = tclass;
	return hashtab_map(cur_pdb->filename_trans, name_rule_applies, &q);
}

static void role_rule(const context_struct_t *s, const context_struct_t *t,
		      uint32_t tclass, context_struct_t *n)
{
	role_trans_t *r;

	for (r = cur_pdb->role_tr; r; r = r->next) {
		if (r->role == s->role && r->type == t->type &&
		    r->tclass == tclass) {
			n->role = r->new_role;
			return;
		}
	}
}

static int mls_rule(const class_datum_t *cls, int proc_like,
		    const context_struct_t *s, const context_struct_t *t,
		    uint32_t tclass, context_struct_t *n)
{
	range_trans_t key;
	mls_range_t *r;

	if (!cur_pdb->mls)
		return 0;
	key.source_type = s->type;
	key.target_type = t->type;
	key.target_class = tclass;
	r = hashtab_search(cur_pdb->range_tr, (hashtab_key_t)&key);
	if (r)
		return mls_range_cpy(&n->range, r);
	switch (cls ? cls->default_range : 0) {
	case DEFAULT_SOURCE_LOW:
		return mls_context_cpy_low(n, s);
	case DEFAULT_SOURCE_HIGH:
		return mls_context_cpy_high(n, s);
	case DEFAULT_SOURCE_LOW_HIGH:
		return mls_context_cpy(n, s);
	case DEFAULT_TARGET_LOW:
		return mls_context_cpy_low(n, t);
	case DEFAULT_TARGET_HIGH:
		return mls_context_cpy_high(n, t);
	case DEFAULT_TARGET_LOW_HIGH:
		return mls_context_cpy(n, t);
	case DEFAULT_GLBLUB:
		return mls_context_glblub(n, s, t);
	}
	return proc_like ? mls_context_cpy(n, s) : mls_context_cpy_low(n, s);
}

/*
 * The label of a new object of class `tclass' created by `ssid' in (or
 * through) `tsid', optionally named `name' -- the kernel's
 * security_compute_sid(..., AVTAB_TRANSITION, name).  Returns 0 and a string
 * the caller frees with scs_free; -EACCES if the computed context is not
 * valid under the policy (the kernel's answer when enforcing).
 */
int scs_compute_create(sepol_security_id_t ssid, sepol_security_id_t tsid,
		       uint32_t tclass, const char *name, char **out,
		       size_t *out_len)
{
	context_struct_t *s, *t, n;
	class_datum_t *cls = NULL;
	int proc_like, rc;

	if (!cur_pdb)
		return -EINVAL;
	s = sepol_sidtab_search(cur_sidtab, ssid);
	t = sepol_sidtab_search(cur_sidtab, tsid);
	if (!s || !t || !tclass)
		return -EINVAL;
	if (tclass <= cur_pdb->p_classes.nprim)
		cls = cur_pdb->class_val_to_struct[tclass - 1];
	proc_like = tclass == class_value("process") || is_socket_class(tclass);

	context_init(&n);
	default_user_role_type(cls, proc_like, s, t, &n);
	type_rule(s, t, tclass, &n);
	filename_rule(s, t, tclass, name, &n);
	role_rule(s, t, tclass, &n);
	rc = mls_rule(cls, proc_like, s, t, tclass, &n);
	if (rc) {
		context_destroy(&n);
		return rc < 0 ? rc : -EINVAL;
	}
	if (!policydb_context_isvalid(cur_pdb, &n))
		rc = -EACCES;
	else
		rc = context_to_string(NULL, cur_pdb, &n, out, out_len);
	context_destroy(&n);
	return rc < 0 ? rc : (rc ? -EINVAL : 0);
}
