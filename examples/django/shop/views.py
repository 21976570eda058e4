"""One view that queries SQLite: its span is tagged like the server span."""

import sqlite3

from django.http import JsonResponse


def orders(request, tenant):
    db = sqlite3.connect(":memory:")
    cursor = db.cursor()
    cursor.execute("select 'order-1'")
    rows = [row[0] for row in cursor.fetchall()]
    db.close()
    return JsonResponse({"tenant": tenant, "orders": rows})
