"""Labels, category ids and names: one mapping, one spelling for what has no name."""
from __future__ import annotations

from refinemask.data.categories import categories_from_entries, default_categories, label_name


def test_labels_follow_category_id_order_and_a_nameless_category_is_named_by_its_id():
    labels, names = categories_from_entries([{"id": 7, "name": "dog"}, {"id": 3}])
    assert labels == {1: 3, 2: 7} and names == ["category_3", "dog"]


def test_a_label_is_named_by_its_category_name_else_as_a_model_without_names_is():
    assert label_name(2, ["cat", "dog"]) == "dog"
    assert label_name(3, ["cat", "dog"]) == "class_3" == default_categories("custom", 3)[1][2]
    assert label_name(0, []) == "class_0"
