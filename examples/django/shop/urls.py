from django.urls import path

from shop import views

urlpatterns = [path("t/<str:tenant>/orders", views.orders)]
